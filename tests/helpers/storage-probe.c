/* SPDX-License-Identifier: Apache-2.0 */
/*
 * storage-probe: runs the daemon's storage layer from a hwameid.conf, so that the integration
 * tests can read and write a volume's data through the same code the block stream uses
 * (storage_volume_open(): a device, a file, or extents on PVs). One JSON line on stdout.
 *
 *   storage-probe CONFIG snapshot
 *   storage-probe CONFIG write POOL VOLUME FILE [OFFSET]   writes FILE's bytes into the volume
 *   storage-probe CONFIG read POOL VOLUME FILE LENGTH [OFFSET]
 */

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "basic/json-util.h"
#include "basic/string-util.h"
#include "config/hwameid-conf.h"
#include "log/log.h"
#include "pool/storage.h"

static sd_event *event;
static int refresh_error;

static void on_refreshed(int error, const char *message, void *userdata) {
        refresh_error = error;
        if (error < 0)
                fprintf(stderr, "refresh: %s\n", strna(message));
        sd_event_exit(event, 0);
}

static void print_result(int error, const char *what, uint64_t bytes, const Storage *s, const char *pool,
                         const char *volume) {
        cJSON *o = cJSON_CreateObject();
        char *text;

        cJSON_AddNumberToObject(o, "error", error);
        cJSON_AddStringToObject(o, "what", what);
        cJSON_AddNumberToObject(o, "bytes", (double) bytes);
        if (volume) {
                const StorageVolume *v = storage_find_volume(s, pool, volume);
                cJSON *ext = cJSON_AddArrayToObject(o, "extents");
                for (size_t i = 0; v && i < v->n_extents; i++) {
                        cJSON *e = cJSON_CreateObject();
                        cJSON_AddStringToObject(e, "path", v->extents[i].path);
                        cJSON_AddNumberToObject(e, "offset", (double) v->extents[i].offset);
                        cJSON_AddNumberToObject(e, "length", (double) v->extents[i].length);
                        cJSON_AddItemToArray(ext, e);
                }
                if (v)
                        cJSON_AddNumberToObject(o, "size", (double) v->size);
        }
        text = cJSON_PrintUnformatted(o);
        puts(text);
        free(text);
        cJSON_Delete(o);
}

int main(int argc, char *argv[]) {
        _cleanup_(storage_freep) Storage *s = NULL;
        Config c = {};
        int r;

        if (argc < 3)
                return 2;
        log_set_max_level(LOG_WARNING);
        if (config_load(&c, argv[1]) < 0)
                return 1;

        const StorageConfig sc = {
                .backend = storage_backend_from_string(c.storage_backend),
                .lvm_activation = c.lvm_activation > 0,
                .disks = c.disks,
                .disk_classes = c.disk_classes,
                .lvm_system_dir = c.lvm_directory,
                .lvm_run_dir = c.lvm_directory,
                .file_dir = c.file_directory,
                .file_capacity = c.file_pool_capacity,
                .file_classes = c.file_pool_classes,
        };
        sd_event_default(&event);
        r = storage_new(event, &sc, NULL, NULL, &s);
        if (r < 0) {
                print_result(r, "storage_new", 0, NULL, NULL, NULL);
                return 1;
        }
        r = storage_refresh(s, on_refreshed, NULL);
        if (r >= 0)
                r = sd_event_loop(event);
        if (r < 0 || refresh_error < 0) {
                print_result(r < 0 ? r : refresh_error, "refresh", 0, NULL, NULL, NULL);
                return 1;
        }

        if (streq(argv[2], "snapshot")) {
                print_result(0, "snapshot", 0, s, NULL, NULL);
        } else if ((streq(argv[2], "write") || streq(argv[2], "read")) && argc >= 6) {
                _cleanup_(blockdev_closep) BlockDev *b = NULL;
                bool writing = streq(argv[2], "write");
                uint64_t offset = 0, length = 0;
                _cleanup_free_ char *buf = NULL;
                _cleanup_close_ int fd = -EBADF;
                struct stat st;

                if (writing && argc >= 7)
                        offset = strtoull(argv[6], NULL, 0);
                if (!writing) {
                        if (argc < 7)
                                return 2;
                        length = strtoull(argv[6], NULL, 0);
                        if (argc >= 8)
                                offset = strtoull(argv[7], NULL, 0);
                }
                r = storage_volume_open(s, argv[3], argv[4], writing ? 0 : BLOCKDEV_READ_ONLY, &b);
                if (r < 0) {
                        print_result(r, "open", 0, s, argv[3], argv[4]);
                        return 1;
                }
                if (writing) {
                        fd = open(argv[5], O_RDONLY | O_CLOEXEC);
                        if (fd < 0 || fstat(fd, &st) < 0)
                                return 1;
                        length = (uint64_t) st.st_size;
                        buf = malloc(length);
                        if (!buf || read(fd, buf, length) != (ssize_t) length)
                                return 1;
                        r = blockdev_pwrite(b, buf, length, offset);
                        if (r >= 0)
                                r = blockdev_flush(b);
                } else {
                        buf = malloc(length);
                        if (!buf)
                                return 1;
                        r = blockdev_pread(b, buf, length, offset);
                        if (r >= 0) {
                                fd = open(argv[5], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                                if (fd < 0 || write(fd, buf, length) != (ssize_t) length)
                                        r = -EIO;
                        }
                }
                b = blockdev_close(b);
                storage_volume_release(s, argv[3], argv[4]);
                print_result(r, argv[2], length, s, argv[3], argv[4]);
        } else
                return 2;

        s = storage_free(s);
        sd_event_unref(event);
        config_done(&c);
        return r < 0 ? 1 : 0;
}
