/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * MESSAGE_ID values of the events an operator may want to find with
 * "journalctl MESSAGE_ID=…". Each one has an entry in units/hwameid.catalog; add both together.
 */

#define HWAMEID_MESSAGE_STARTED       "961fcae93a9d4a0eb691f6e094e4bed2"
#define HWAMEID_MESSAGE_STOPPED       "2adaf8013aa64dc297946508dd4ac61a"
#define HWAMEID_MESSAGE_RELOAD_FAILED "d28a2c4b3b2b4723a52362bc0d4037c1"
#define HWAMEID_MESSAGE_LEADER_ACQUIRED "fb9d5eb814564f8187e09c266803cda6"
#define HWAMEID_MESSAGE_LEADER_LOST "9dd6229f57ea41e3821593e3c31d0766"
