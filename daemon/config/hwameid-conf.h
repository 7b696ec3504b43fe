/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The node's bootstrap settings (/etc/hwameid/hwameid.conf and its .conf.d drop-ins).
 * Cluster-wide desired state comes from the Kubernetes API, never from here.
 * Every key is documented in conf/hwameid.conf, which the tests parse.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../basic/time-util.h"

#define HWAMEID_CONFIG_PATH         "/etc/hwameid/hwameid.conf"
#define HWAMEID_CLUSTER_SECRET_PATH "/etc/hwameid/cluster-secret"
#define HWAMEID_STREAM_PORT_DEFAULT 10809
/* In Prometheus' exporter range (9100-9999); no Kubernetes node component or common exporter
 * listens there by default. */
#define HWAMEID_METRICS_PORT_DEFAULT    9743
#define HWAMEID_METRICS_ADDRESS_DEFAULT "127.0.0.1"

typedef struct Config {
        /* [Node] */
        char *node_name;  /* Kubernetes node name; default: the host name */
        char *storage_ip; /* NULL: the interface's address, or the one the API server is reached from */
        char *storage_interface; /* NULL: none */
        usec_t heartbeat_interval;

        /* [Kubernetes] */
        char *kubeconfig;
        char *namespace; /* of the Leases */
        unsigned qps, burst;

        /* [LeaderElection] */
        usec_t lease_duration, renew_deadline, retry_period;

        /* [Storage] */
        char *storage_backend; /* "lvm" or "file" */
        char **disks;
        char **disk_classes;
        int lvm_activation; /* -1 auto */
        char *lvm_directory;
        char *file_directory;
        uint64_t file_pool_capacity;
        char **file_pool_classes;
        usec_t storage_refresh;

        /* [Stream] */
        unsigned stream_port;
        char *stream_listen_address; /* NULL: the storage IP */
        char *cluster_secret_file;
        bool stream_insecure; /* plain TCP between nodes: tests only */
        char *checkpoint_dir;
        uint64_t stream_bandwidth; /* bytes per second per push; 0: unlimited */

        /* [Migration] (the leader's) */
        unsigned migrate_max_running, migrate_max_running_per_node;

        /* [Metrics] */
        char *metrics_listen_address;
        unsigned metrics_port; /* 0: no metrics endpoint */

        /* [Control] */
        char *control_socket;

        /* [Log] */
        int log_level;
} Config;

/* Fills in the defaults. */
int config_init(Config *c);
void config_done(Config *c);

/* Defaults, then path and its drop-ins. On failure every error has been logged and *c is left
 * empty (as after config_done()). */
int config_load(Config *c, const char *path);

/* The normalised configuration as INI, which config_load() reads back to the same values. */
int config_dump_all(FILE *f, const Config *c);
