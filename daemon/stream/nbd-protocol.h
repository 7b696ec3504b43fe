/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The NBD protocol on the wire (doc/proto.md of the NetworkBlockDevice project): fixed newstyle
 * negotiation, simple and structured replies, base:allocation. All integers are big-endian; the
 * structs below are the exact wire layout (packed) and are filled with htobe*()/be*toh().
 */

#include <stdint.h>

/* Negotiation */
#define NBD_MAGIC                 UINT64_C(0x4e42444d41474943) /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC            UINT64_C(0x49484156454F5054) /* "IHAVEOPT" */
#define NBD_REP_MAGIC             UINT64_C(0x0003e889045565a9)

#define NBD_FLAG_FIXED_NEWSTYLE   (1U << 0) /* handshake flags (server) */
#define NBD_FLAG_NO_ZEROES        (1U << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1U << 0) /* client flags */
#define NBD_FLAG_C_NO_ZEROES      (1U << 1)

#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10
#define NBD_OPT_EXTENDED_HEADERS  11
/* hwameid peers only (an option number no standard peer knows, so they answer
 * NBD_REP_ERR_UNSUP): block hashes for delta copies. See "The delta extension" below. */
#define NBD_OPT_HWAMEID_DELTA       UINT32_C(0x48574d44) /* "HWMD" */

#define NBD_REP_ACK                 1
#define NBD_REP_SERVER              2
#define NBD_REP_INFO                3
#define NBD_REP_META_CONTEXT        4
#define NBD_REP_FLAG_ERROR          (UINT32_C(1) << 31)
#define NBD_REP_ERR_UNSUP           (NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY          (NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID         (NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM        (NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD        (NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN         (NBD_REP_FLAG_ERROR | 6)
#define NBD_REP_ERR_SHUTDOWN        (NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8)
#define NBD_REP_ERR_TOO_BIG         (NBD_REP_FLAG_ERROR | 9)

#define NBD_INFO_EXPORT             0
#define NBD_INFO_NAME               1
#define NBD_INFO_DESCRIPTION        2
#define NBD_INFO_BLOCK_SIZE         3

/* Transmission flags */
#define NBD_FLAG_HAS_FLAGS         (1U << 0)
#define NBD_FLAG_READ_ONLY         (1U << 1)
#define NBD_FLAG_SEND_FLUSH        (1U << 2)
#define NBD_FLAG_SEND_FUA          (1U << 3)
#define NBD_FLAG_ROTATIONAL        (1U << 4)
#define NBD_FLAG_SEND_TRIM         (1U << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1U << 6)
#define NBD_FLAG_SEND_DF           (1U << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1U << 8)
#define NBD_FLAG_SEND_CACHE        (1U << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1U << 11)

/* Transmission */
#define NBD_REQUEST_MAGIC           UINT32_C(0x25609513)
#define NBD_SIMPLE_REPLY_MAGIC      UINT32_C(0x67446698)
#define NBD_STRUCTURED_REPLY_MAGIC  UINT32_C(0x668e33ef)

#define NBD_CMD_READ                0
#define NBD_CMD_WRITE               1
#define NBD_CMD_DISC                2
#define NBD_CMD_FLUSH               3
#define NBD_CMD_TRIM                4
#define NBD_CMD_CACHE               5
#define NBD_CMD_WRITE_ZEROES        6
#define NBD_CMD_BLOCK_STATUS        7

#define NBD_CMD_FLAG_FUA            (1U << 0)
#define NBD_CMD_FLAG_NO_HOLE        (1U << 1)
#define NBD_CMD_FLAG_DF             (1U << 2)
#define NBD_CMD_FLAG_REQ_ONE        (1U << 3)
#define NBD_CMD_FLAG_FAST_ZERO      (1U << 4)

#define NBD_REPLY_FLAG_DONE         (1U << 0)
#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR        ((1U << 15) | 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1U << 15) | 2)

/*
 * The delta extension (hwameid peers only): the client asks the server for hashes of the blocks
 * it holds and sends only the blocks whose hashes differ from its own.
 *
 * Negotiation: after NBD_OPT_STRUCTURED_REPLY was acknowledged and before NBD_OPT_GO, the client
 * sends NBD_OPT_HWAMEID_DELTA with a struct nbd_hwameid_delta_option payload. The server answers
 *   NBD_REP_ACK (no payload)   it will hash with that algorithm and block size;
 *   NBD_REP_ERR_UNSUP          it does not know the option (every standard server);
 *   NBD_REP_ERR_INVALID        wrong length, unknown algorithm, a block size that is not a power
 *                              of two in [NBD_HWAMEID_DELTA_BLOCK_MIN, NBD_HWAMEID_DELTA_BLOCK_MAX],
 *                              or structured replies were not negotiated.
 * Sending it again replaces the setting; NBD_OPT_STARTTLS forgets it, like everything else.
 *
 * Transmission, only after an ACK: NBD_CMD_HWAMEID_HASH with offset a multiple of the block size
 * and count a multiple of it too, except that the range may end at the export's end; count is
 * 1..NBD_HWAMEID_HASH_MAX_COUNT; no command flags. Anything else is NBD_EINVAL (NBD_EOVERFLOW
 * past the end). The reply is one NBD_REPLY_TYPE_HWAMEID_HASHES chunk with NBD_REPLY_FLAG_DONE:
 * struct nbd_structured_reply_hwameid_hashes, then one NBD_HWAMEID_HASH_SIZE digest per block
 * (ceil(count / block size) of them): XXH3-128 with seed 0 of the block's bytes in canonical
 * form (XXH128_canonicalFromHash: big-endian, high half first); the last block of the export is
 * hashed over its actual length. Holes hash as the zero bytes they read as. On failure: an error
 * chunk, as for any command. Without an ACK the command is unknown: NBD_EINVAL.
 */
#define NBD_HWAMEID_DELTA_XXH3_128      1U
#define NBD_HWAMEID_DELTA_BLOCK_MIN     4096U
#define NBD_HWAMEID_DELTA_BLOCK_MAX     (4U << 20)
#define NBD_HWAMEID_DELTA_BLOCK_DEFAULT (64U << 10)
#define NBD_HWAMEID_HASH_SIZE           16U
#define NBD_HWAMEID_HASH_MAX_COUNT      (128U << 20)
#define NBD_CMD_HWAMEID_HASH            UINT16_C(0x4857) /* "HW" */
#define NBD_REPLY_TYPE_HWAMEID_HASHES   UINT16_C(0x4848) /* "HH" (non-error: bit 15 clear) */

#define NBD_STATE_HOLE                  (1U << 0)
#define NBD_STATE_ZERO                  (1U << 1)

/* Error values on the wire (not errno values: map them) */
#define NBD_EPERM     1
#define NBD_EIO       5
#define NBD_ENOMEM    12
#define NBD_EINVAL    22
#define NBD_ENOSPC    28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP   95
#define NBD_ESHUTDOWN 108

/* Limits */
#define NBD_MAX_STRING           4096        /* export names, messages */
#define NBD_MAX_OPTION_LENGTH    65536       /* more than any option we accept needs */
#define NBD_MAX_PAYLOAD          (32U << 20) /* READ/WRITE; the spec's interoperable maximum */
#define NBD_DEFAULT_PORT         10809
#define NBD_META_BASE_ALLOCATION "base:allocation"

struct nbd_new_handshake {
        uint64_t nbdmagic;
        uint64_t version; /* NBD_OPTS_MAGIC */
        uint16_t gflags;
} __attribute__((packed));

struct nbd_new_option {
        uint64_t version; /* NBD_OPTS_MAGIC */
        uint32_t option;
        uint32_t optlen;
} __attribute__((packed));

struct nbd_fixed_new_option_reply {
        uint64_t magic; /* NBD_REP_MAGIC */
        uint32_t option;
        uint32_t reply;
        uint32_t replylen;
} __attribute__((packed));

struct nbd_export_name_option_reply {
        uint64_t exportsize;
        uint16_t eflags;
        uint8_t zeroes[124];
} __attribute__((packed));

struct nbd_fixed_new_option_reply_info_export {
        uint16_t info; /* NBD_INFO_EXPORT */
        uint64_t exportsize;
        uint16_t eflags;
} __attribute__((packed));

struct nbd_fixed_new_option_reply_info_block_size {
        uint16_t info; /* NBD_INFO_BLOCK_SIZE */
        uint32_t minimum;
        uint32_t preferred;
        uint32_t maximum;
} __attribute__((packed));

struct nbd_request {
        uint32_t magic; /* NBD_REQUEST_MAGIC */
        uint16_t flags;
        uint16_t type;
        uint64_t cookie;
        uint64_t offset;
        uint32_t count;
} __attribute__((packed));

struct nbd_simple_reply {
        uint32_t magic; /* NBD_SIMPLE_REPLY_MAGIC */
        uint32_t error;
        uint64_t cookie;
} __attribute__((packed));

struct nbd_structured_reply {
        uint32_t magic; /* NBD_STRUCTURED_REPLY_MAGIC */
        uint16_t flags;
        uint16_t type;
        uint64_t cookie;
        uint32_t length;
} __attribute__((packed));

struct nbd_structured_reply_offset_data {
        uint64_t offset; /* data follows */
} __attribute__((packed));

struct nbd_structured_reply_offset_hole {
        uint64_t offset;
        uint32_t length;
} __attribute__((packed));

struct nbd_structured_reply_error {
        uint32_t error;
        uint16_t len; /* message follows */
} __attribute__((packed));

struct nbd_hwameid_delta_option {
        uint32_t algorithm;  /* NBD_HWAMEID_DELTA_XXH3_128 */
        uint32_t block_size; /* bytes */
} __attribute__((packed));

struct nbd_structured_reply_hwameid_hashes {
        uint64_t offset; /* the request's offset; the digests follow */
} __attribute__((packed));

struct nbd_block_descriptor {
        uint32_t length;
        uint32_t status_flags;
} __attribute__((packed));

_Static_assert(sizeof(struct nbd_request) == 28, "NBD request header");
_Static_assert(sizeof(struct nbd_simple_reply) == 16, "NBD simple reply");
_Static_assert(sizeof(struct nbd_structured_reply) == 20, "NBD structured reply chunk");
_Static_assert(sizeof(struct nbd_fixed_new_option_reply) == 20, "NBD option reply");
_Static_assert(sizeof(struct nbd_new_option) == 16, "NBD option");

/* errno → NBD error value, and back (unknown values are EINVAL, as the spec says). */
static inline uint32_t nbd_errno_to_wire(int error) {
        switch (error < 0 ? -error : error) {
        case 0:
                return 0;
        case 1:  /* EPERM */
        case 13: /* EACCES */
        case 30: /* EROFS */
                return NBD_EPERM;
        case 12:
                return NBD_ENOMEM;
        case 22:
                return NBD_EINVAL;
        case 28:
        case 27: /* EFBIG */
                return NBD_ENOSPC;
        case 75:
                return NBD_EOVERFLOW;
        case 95:
                return NBD_ENOTSUP;
        case 108:
                return NBD_ESHUTDOWN;
        default:
                return NBD_EIO;
        }
}

static inline int nbd_wire_to_errno(uint32_t e) {
        switch (e) {
        case NBD_EPERM:
        case NBD_EIO:
        case NBD_ENOMEM:
        case NBD_EINVAL:
        case NBD_ENOSPC:
        case NBD_EOVERFLOW:
        case NBD_ENOTSUP:
        case NBD_ESHUTDOWN:
                return -(int) e; /* the wire values are Linux's errno values */
        default:
                return -22;
        }
}
