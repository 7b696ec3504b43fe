/* SPDX-License-Identifier: Apache-2.0 */
#include <stddef.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "../basic/string-util.h"
#include "../log/log.h"
#include "conf-parser.h"
#include "hwameid-conf.h"

#define DEFAULT_KUBECONFIG     "/etc/hwameid/kubeconfig"
#define DEFAULT_CONTROL_SOCKET "/run/hwameid/control.sock"

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

static const ConfigItem config_items[] = {
        { "Node", "Name", config_parse_node_name, config_dump_string, offsetof(Config, node_name) },
        { "Kubernetes", "Kubeconfig", config_parse_path, config_dump_string, offsetof(Config, kubeconfig) },
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

        *c = (Config){ .log_level = LOG_INFO };

        r = default_node_name(&c->node_name);
        if (r < 0)
                return r;
        c->kubeconfig = strdup(DEFAULT_KUBECONFIG);
        c->control_socket = strdup(DEFAULT_CONTROL_SOCKET);
        if (!c->kubeconfig || !c->control_socket) {
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
        free(c->control_socket);
        *c = (Config){};
}

static int config_validate(const Config *c, const char *path) {
        /* Keys that may be emptied by an assignment but must not end up empty. */
        if (isempty(c->node_name))
                return config_log_syntax(path, 0, EINVAL, "[Node] Name= must not be empty.");
        if (isempty(c->kubeconfig))
                return config_log_syntax(path, 0, EINVAL, "[Kubernetes] Kubeconfig= must not be empty.");
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
