/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../basic/string-util.h"
#include "../log/log.h"
#include "conf-parser.h"
#include "hwameid-conf.h"

#define DEFAULT_KUBECONFIG     "/etc/hwameid/kubeconfig"
#define DEFAULT_CONTROL_SOCKET "/run/hwameid/control.sock"
#define DEFAULT_NAMESPACE      "hwameid-system"

static int config_parse_node_name(const char *file, unsigned line, const char *section, const char *key,
                                  const char *value, void *field) {
        /* A Kubernetes node name is a DNS subdomain: lower-case alphanumerics, '-' and '.'. */
        size_t n = strlen(value);

        if (n == 0 || n > 253 || strspn(value, "abcdefghijklmnopqrstuvwxyz0123456789-.") != n ||
            !strchr("abcdefghijklmnopqrstuvwxyz0123456789", value[0]) ||
            !strchr("abcdefghijklmnopqrstuvwxyz0123456789", value[n - 1]))
                return config_log_syntax(
                        file, line, EINVAL,
                        "%s= must be a valid Kubernetes node name (lower-case DNS subdomain), got '%s'.",
                        key, value);
        return config_parse_string(file, line, section, key, value, field);
}

static int config_parse_namespace(const char *file, unsigned line, const char *section, const char *key,
                                  const char *value, void *field) {
        /* A namespace is a DNS label: lower-case alphanumerics and '-', at most 63. */
        size_t n = strlen(value);

        if (n == 0 || n > 63 || strspn(value, "abcdefghijklmnopqrstuvwxyz0123456789-") != n ||
            value[0] == '-' || value[n - 1] == '-')
                return config_log_syntax(
                        file, line, EINVAL,
                        "%s= must be a valid Kubernetes namespace (lower-case DNS label), got '%s'.", key,
                        value);
        return config_parse_string(file, line, section, key, value, field);
}

static int config_parse_backend(const char *file, unsigned line, const char *section, const char *key,
                                const char *value, void *field) {
        if (!streq(value, "lvm") && !streq(value, "file"))
                return config_log_syntax(file, line, EINVAL, "%s= expects 'lvm' or 'file', got '%s'.", key,
                                         value);
        return config_parse_string(file, line, section, key, value, field);
}

static int config_parse_classes(const char *file, unsigned line, const char *section, const char *key,
                                const char *value, void *field) {
        _cleanup_strv_free_ char **words = NULL;

        if (strv_split(value, " \t", &words) < 0)
                return log_oom();
        for (char **w = words; *w; w++) {
                const char *c = strchr(*w, '=') ? strchr(*w, '=') + 1 : *w;
                if (strcasecmp(c, "HDD") != 0 && strcasecmp(c, "SSD") != 0 && strcasecmp(c, "NVMe") != 0)
                        return config_log_syntax(file, line, EINVAL,
                                                 "%s= expects the classes HDD, SSD or NVMe, got '%s'.", key,
                                                 *w);
                if (c != *w && (c - 1 == *w || (*w)[0] != '/'))
                        return config_log_syntax(
                                file, line, EINVAL,
                                "%s= expects PATTERN=CLASS with an absolute device pattern, got '%s'.", key,
                                *w);
        }
        return config_parse_strv(file, line, section, key, value, field);
}

static int config_parse_disks(const char *file, unsigned line, const char *section, const char *key,
                              const char *value, void *field) {
        _cleanup_strv_free_ char **words = NULL;

        if (strv_split(value, " \t", &words) < 0)
                return log_oom();
        for (char **w = words; *w; w++)
                if (!startswith(*w, "/dev/"))
                        return config_log_syntax(file, line, EINVAL,
                                                 "%s= expects device patterns under /dev/, got '%s'.", key,
                                                 *w);
        return config_parse_strv(file, line, section, key, value, field);
}

static int config_parse_ip(const char *file, unsigned line, const char *section, const char *key,
                           const char *value, void *field) {
        unsigned char buf[16];

        if (!isempty(value) && inet_pton(AF_INET, value, buf) != 1 && inet_pton(AF_INET6, value, buf) != 1)
                return config_log_syntax(file, line, EINVAL,
                                         "%s= expects an IPv4 or IPv6 address, got '%s'.", key, value);
        return config_parse_string(file, line, section, key, value, field);
}

static int config_parse_ifname(const char *file, unsigned line, const char *section, const char *key,
                               const char *value, void *field) {
        size_t n = strlen(value);

        if (n >= 16 || strpbrk(value, "/ \t:") || streq(value, ".") || streq(value, ".."))
                return config_log_syntax(file, line, EINVAL,
                                         "%s= expects a network interface name, got '%s'.", key, value);
        return config_parse_string(file, line, section, key, value, field);
}

static const ConfigItem config_items[] = {
        { "Node", "Name", config_parse_node_name, config_dump_string, offsetof(Config, node_name) },
        { "Node", "StorageIP", config_parse_ip, config_dump_string, offsetof(Config, storage_ip) },
        { "Node", "StorageInterface", config_parse_ifname, config_dump_string,
          offsetof(Config, storage_interface) },
        { "Node", "HeartbeatInterval", config_parse_sec, config_dump_sec,
          offsetof(Config, heartbeat_interval) },
        { "Kubernetes", "Kubeconfig", config_parse_path, config_dump_string, offsetof(Config, kubeconfig) },
        { "Kubernetes", "Namespace", config_parse_namespace, config_dump_string,
          offsetof(Config, namespace) },
        { "Kubernetes", "QPS", config_parse_unsigned, config_dump_unsigned, offsetof(Config, qps) },
        { "Kubernetes", "Burst", config_parse_unsigned, config_dump_unsigned, offsetof(Config, burst) },
        { "LeaderElection", "LeaseDuration", config_parse_sec, config_dump_sec,
          offsetof(Config, lease_duration) },
        { "LeaderElection", "RenewDeadline", config_parse_sec, config_dump_sec,
          offsetof(Config, renew_deadline) },
        { "LeaderElection", "RetryPeriod", config_parse_sec, config_dump_sec,
          offsetof(Config, retry_period) },
        { "Storage", "Backend", config_parse_backend, config_dump_string,
          offsetof(Config, storage_backend) },
        { "Storage", "Disks", config_parse_disks, config_dump_strv, offsetof(Config, disks) },
        { "Storage", "DiskClasses", config_parse_classes, config_dump_strv, offsetof(Config, disk_classes) },
        { "Storage", "LVMActivation", config_parse_tristate, config_dump_tristate,
          offsetof(Config, lvm_activation) },
        { "Storage", "LVMDirectory", config_parse_path, config_dump_string,
          offsetof(Config, lvm_directory) },
        { "Storage", "FileDirectory", config_parse_path, config_dump_string,
          offsetof(Config, file_directory) },
        { "Storage", "FilePoolCapacity", config_parse_size, config_dump_size,
          offsetof(Config, file_pool_capacity) },
        { "Storage", "FilePoolClasses", config_parse_classes, config_dump_strv,
          offsetof(Config, file_pool_classes) },
        { "Storage", "RefreshInterval", config_parse_sec, config_dump_sec,
          offsetof(Config, storage_refresh) },
        { "Stream", "Port", config_parse_unsigned, config_dump_unsigned, offsetof(Config, stream_port) },
        { "Stream", "ListenAddress", config_parse_ip, config_dump_string,
          offsetof(Config, stream_listen_address) },
        { "Stream", "ClusterSecretFile", config_parse_path, config_dump_string,
          offsetof(Config, cluster_secret_file) },
        { "Stream", "Insecure", config_parse_bool, config_dump_bool, offsetof(Config, stream_insecure) },
        { "Stream", "CheckpointDirectory", config_parse_path, config_dump_string,
          offsetof(Config, checkpoint_dir) },
        { "Stream", "BandwidthLimit", config_parse_size, config_dump_size,
          offsetof(Config, stream_bandwidth) },
        { "Migration", "MaxConcurrent", config_parse_unsigned, config_dump_unsigned,
          offsetof(Config, migrate_max_running) },
        { "Migration", "MaxConcurrentPerNode", config_parse_unsigned, config_dump_unsigned,
          offsetof(Config, migrate_max_running_per_node) },
        { "Metrics", "ListenAddress", config_parse_ip, config_dump_string,
          offsetof(Config, metrics_listen_address) },
        { "Metrics", "Port", config_parse_unsigned, config_dump_unsigned, offsetof(Config, metrics_port) },
        { "Control", "Socket", config_parse_path, config_dump_string, offsetof(Config, control_socket) },
        { "Log", "Level", config_parse_log_level, config_dump_log_level, offsetof(Config, log_level) },
};

static int default_node_name(char **ret) {
        char host[256] = "";
        char *dot;

        if (gethostname(host, sizeof(host) - 1) < 0)
                return -errno;
        /* Kubelet registers the short host name, lower-cased. */
        dot = strchr(host, '.');
        if (dot)
                *dot = '\0';
        for (char *p = host; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char) (*p - 'A' + 'a');
        *ret = strdup(host);
        return *ret ? 0 : -ENOMEM;
}

int config_init(Config *c) {
        int r;

        *c = (Config){
                .log_level = LOG_INFO,
                .heartbeat_interval = 40 * USEC_PER_SEC,
                .qps = 20,
                .burst = 40,
                /* client-go's defaults for core components */
                .lease_duration = 15 * USEC_PER_SEC,
                .renew_deadline = 10 * USEC_PER_SEC,
                .retry_period = 2 * USEC_PER_SEC,
                .lvm_activation = -1,
                .file_pool_capacity = 10ULL << 30,
                .storage_refresh = 5 * USEC_PER_MINUTE,
                .stream_port = HWAMEID_STREAM_PORT_DEFAULT,
                .metrics_port = HWAMEID_METRICS_PORT_DEFAULT,
                .migrate_max_running = 4,
                .migrate_max_running_per_node = 2,
        };

        r = default_node_name(&c->node_name);
        if (r < 0)
                return r;
        c->kubeconfig = strdup(DEFAULT_KUBECONFIG);
        c->namespace = strdup(DEFAULT_NAMESPACE);
        c->control_socket = strdup(DEFAULT_CONTROL_SOCKET);
        c->storage_backend = strdup("file");
        c->lvm_directory = strdup("/run/hwameid/lvm");
        c->file_directory = strdup("/var/lib/hwameid/pools");
        c->cluster_secret_file = strdup(HWAMEID_CLUSTER_SECRET_PATH);
        c->checkpoint_dir = strdup("/var/lib/hwameid/copies");
        c->metrics_listen_address = strdup(HWAMEID_METRICS_ADDRESS_DEFAULT);
        if (!c->kubeconfig || !c->namespace || !c->control_socket || !c->storage_backend ||
            !c->lvm_directory || !c->file_directory || !c->cluster_secret_file || !c->checkpoint_dir ||
            !c->metrics_listen_address) {
                config_done(c);
                return -ENOMEM;
        }
        return 0;
}

void config_done(Config *c) {
        if (!c)
                return;
        free(c->node_name);
        free(c->kubeconfig);
        free(c->namespace);
        free(c->control_socket);
        free(c->storage_ip);
        free(c->storage_interface);
        free(c->storage_backend);
        strv_free(c->disks);
        strv_free(c->disk_classes);
        free(c->lvm_directory);
        free(c->file_directory);
        strv_free(c->file_pool_classes);
        free(c->stream_listen_address);
        free(c->cluster_secret_file);
        free(c->checkpoint_dir);
        free(c->metrics_listen_address);
        *c = (Config){};
}

static int config_validate(const Config *c, const char *path) {
        /* Keys that may be emptied by an assignment but must not end up empty. */
        if (isempty(c->node_name))
                return config_log_syntax(path, 0, EINVAL, "[Node] Name= must not be empty.");
        if (isempty(c->kubeconfig))
                return config_log_syntax(path, 0, EINVAL, "[Kubernetes] Kubeconfig= must not be empty.");
        if (isempty(c->storage_backend) || isempty(c->lvm_directory) || isempty(c->file_directory))
                return config_log_syntax(
                        path, 0, EINVAL,
                        "[Storage] Backend=, LVMDirectory= and FileDirectory= must not be empty.");
        if (streq(c->storage_backend, "file") &&
            (strv_length(c->file_pool_classes) == 0 || c->file_pool_capacity < (64ULL << 20)))
                return config_log_syntax(path, 0, EINVAL,
                                         "[Storage] the file backend needs FilePoolClasses= and a "
                                         "FilePoolCapacity= of at least 64M.");
        if (c->storage_refresh < USEC_PER_SEC)
                return config_log_syntax(path, 0, EINVAL, "[Storage] RefreshInterval= must be at least 1s.");
        if (isempty(c->namespace))
                return config_log_syntax(path, 0, EINVAL, "[Kubernetes] Namespace= must not be empty.");
        if (c->qps == 0 || c->burst == 0)
                return config_log_syntax(path, 0, EINVAL,
                                         "[Kubernetes] QPS= and Burst= must be at least 1.");
        if (c->heartbeat_interval < USEC_PER_SEC || c->heartbeat_interval == USEC_INFINITY)
                return config_log_syntax(path, 0, EINVAL, "[Node] HeartbeatInterval= must be at least 1s.");
        /* client-go's rule: the leader must give up (renew deadline) before others may take over
         * (lease duration), and must be able to retry within the deadline. */
        if (c->retry_period == 0 || c->renew_deadline <= c->retry_period * 12 / 10 ||
            c->lease_duration <= c->renew_deadline || c->lease_duration == USEC_INFINITY)
                return config_log_syntax(
                        path, 0, EINVAL,
                        "[LeaderElection] needs LeaseDuration= > RenewDeadline= > 1.2 × RetryPeriod= > 0.");
        if (c->lease_duration % USEC_PER_SEC != 0)
                return config_log_syntax(
                        path, 0, EINVAL,
                        "[LeaderElection] LeaseDuration= must be whole seconds (the Lease stores seconds).");
        if (c->stream_port > 65535)
                return config_log_syntax(path, 0, EINVAL, "[Stream] Port= must be 0…65535.");
        if (isempty(c->cluster_secret_file) || isempty(c->checkpoint_dir))
                return config_log_syntax(
                        path, 0, EINVAL,
                        "[Stream] ClusterSecretFile= and CheckpointDirectory= must not be empty.");
        if (c->metrics_port > 65535)
                return config_log_syntax(path, 0, EINVAL, "[Metrics] Port= must be 0…65535.");
        if (isempty(c->metrics_listen_address))
                return config_log_syntax(path, 0, EINVAL,
                                         "[Metrics] ListenAddress= must not be empty (0.0.0.0 or :: for "
                                         "every address).");
        if (isempty(c->control_socket))
                return config_log_syntax(path, 0, EINVAL, "[Control] Socket= must not be empty.");
        if (strlen(c->control_socket) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                return config_log_syntax(path, 0, ENAMETOOLONG,
                                         "[Control] Socket= path is too long for a socket.");
        return 0;
}

int config_load(Config *c, const char *path) {
        int r;

        r = config_init(c);
        if (r < 0)
                return log_oom();
        r = config_parse_with_dropins(path, config_items, ELEMENTSOF(config_items), c);
        /* List defaults apply when the files leave the list empty (assignments append). */
        if (r >= 0 && strv_length(c->file_pool_classes) == 0 &&
            strv_extend(&c->file_pool_classes, "HDD") < 0)
                r = log_oom();
        if (r >= 0)
                r = config_validate(c, path);
        if (r < 0) {
                config_done(c);
                return r;
        }
        return 0;
}

int config_dump_all(FILE *f, const Config *c) {
        return config_dump(f, config_items, ELEMENTSOF(config_items), c);
}
