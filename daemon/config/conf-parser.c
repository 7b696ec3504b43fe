/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "../basic/string-util.h"
#include "../basic/time-util.h"
#include "../log/log.h"
#include "conf-parser.h"

#define CONFIG_LINE_MAX (64U * 1024U)

DEFINE_TRIVIAL_CLEANUP_FUNC(FILE *, fclose);
DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

int config_log_syntax(const char *file, unsigned line, int error, const char *format, ...) {
        char msg[1024];
        va_list ap;

        if (error == 0)
                error = EINVAL;
        errno = abs(error);
        va_start(ap, format);
        (void) vsnprintf(msg, sizeof(msg), format, ap);
        va_end(ap);
        if (line > 0)
                return log_error_errno(error, "%s:%u: %s", file, line, msg);
        return log_error_errno(error, "%s: %s", file, msg);
}

static const ConfigItem *config_find(const ConfigItem *items, size_t n, const char *section,
                                     const char *key) {
        for (size_t i = 0; i < n; i++)
                if (streq(items[i].section, section) && streq(items[i].key, key))
                        return &items[i];
        return NULL;
}

static bool config_has_section(const ConfigItem *items, size_t n, const char *section) {
        for (size_t i = 0; i < n; i++)
                if (streq(items[i].section, section))
                        return true;
        return false;
}

int config_parse_stream(const char *name, FILE *f, const ConfigItem *items, size_t n_items, void *target) {
        _cleanup_free_ char *buf = NULL, *section = NULL;
        size_t bufsize = 0;
        unsigned line = 0;
        bool failed = false;
        ssize_t len;

        assert(name);
        assert(f);

        while ((len = getline(&buf, &bufsize, f)) >= 0) {
                char *l, *eq, *key, *value;
                const ConfigItem *item;

                line++;
                if ((size_t) len > CONFIG_LINE_MAX) {
                        config_log_syntax(name, line, E2BIG, "Line is longer than %u bytes.",
                                          CONFIG_LINE_MAX);
                        failed = true;
                        continue;
                }
                if (strlen(buf) != (size_t) len) {
                        config_log_syntax(name, line, EBADMSG, "Line contains a NUL byte.");
                        failed = true;
                        continue;
                }

                l = strstrip(buf);
                if (*l == '\0' || *l == '#' || *l == ';')
                        continue;

                if (*l == '[') {
                        size_t n = strlen(l);

                        if (n < 3 || l[n - 1] != ']') {
                                config_log_syntax(name, line, EBADMSG, "Invalid section header '%s'.", l);
                                failed = true;
                                continue;
                        }
                        l[n - 1] = '\0';
                        if (free_and_strdup(&section, l + 1) < 0)
                                return log_oom();
                        if (!config_has_section(items, n_items, section)) {
                                config_log_syntax(name, line, ENOENT, "Unknown section [%s].", section);
                                failed = true;
                        }
                        continue;
                }

                eq = strchr(l, '=');
                if (!eq) {
                        config_log_syntax(name, line, EBADMSG, "Missing '=' in '%s'.", l);
                        failed = true;
                        continue;
                }
                *eq = '\0';
                key = strstrip(l);
                value = strstrip(eq + 1);

                if (!section) {
                        config_log_syntax(name, line, EBADMSG, "Assignment to '%s' outside of any section.",
                                          key);
                        failed = true;
                        continue;
                }
                if (!config_has_section(items, n_items, section))
                        continue; /* reported once at the header */

                item = config_find(items, n_items, section, key);
                if (!item) {
                        config_log_syntax(name, line, ENOENT, "Unknown key '%s' in section [%s].", key,
                                          section);
                        failed = true;
                        continue;
                }

                if (item->parse(name, line, section, key, value, (char *) target + item->offset) < 0)
                        failed = true;
        }
        if (ferror(f))
                return config_log_syntax(name, 0, errno ?: EIO, "Failed to read: %m");

        return failed ? -EINVAL : 0;
}

static int config_parse_file(const char *path, bool dropin, const ConfigItem *items, size_t n_items,
                             void *target) {
        _cleanup_(fclosep) FILE *f = NULL;
        struct stat st;

        f = fopen(path, "re");
        if (!f)
                return config_log_syntax(path, 0, errno, "Failed to open %s file: %m",
                                         dropin ? "drop-in" : "configuration");
        if (fstat(fileno(f), &st) < 0)
                return config_log_syntax(path, 0, errno, "Failed to stat: %m");
        if (S_ISDIR(st.st_mode))
                return config_log_syntax(path, 0, EISDIR, "Is a directory, expected a configuration file.");

        return config_parse_stream(path, f, items, n_items, target);
}

static int dropin_compare(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int config_parse_with_dropins(const char *path, const ConfigItem *items, size_t n_items, void *target) {
        _cleanup_free_ char *dirpath = NULL;
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        int r, ret;

        assert(path);

        ret = config_parse_file(path, false, items, n_items, target);
        if (ret == -ENOMEM)
                return ret;

        if (asprintf(&dirpath, "%s.d", path) < 0)
                return log_oom();
        d = opendir(dirpath);
        if (!d) {
                if (errno == ENOENT)
                        return ret;
                return config_log_syntax(dirpath, 0, errno, "Failed to open drop-in directory: %m");
        }

        while ((errno = 0, de = readdir(d))) {
                if (de->d_name[0] == '.' || !endswith(de->d_name, ".conf"))
                        continue;
                r = strv_extend(&names, de->d_name);
                if (r < 0)
                        return log_oom();
        }
        if (errno != 0)
                return config_log_syntax(dirpath, 0, errno, "Failed to read drop-in directory: %m");

        if (names)
                qsort(names, strv_length(names), sizeof(char *), dropin_compare);
        for (char **n = names; n && *n; n++) {
                _cleanup_free_ char *p = NULL;

                if (asprintf(&p, "%s/%s", dirpath, *n) < 0)
                        return log_oom();
                r = config_parse_file(p, true, items, n_items, target);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 && ret >= 0)
                        ret = r;
        }
        return ret;
}

int config_dump(FILE *f, const ConfigItem *items, size_t n_items, const void *target) {
        const char *section = NULL;
        int r;

        for (size_t i = 0; i < n_items; i++) {
                if (!section || !streq(section, items[i].section)) {
                        fprintf(f, "%s[%s]\n", section ? "\n" : "", items[i].section);
                        section = items[i].section;
                }
                fprintf(f, "%s=", items[i].key);
                r = items[i].dump(f, (const char *) target + items[i].offset);
                if (r < 0)
                        return r;
                fputc('\n', f);
        }
        return fflush(f) == 0 ? 0 : -errno;
}

int config_parse_string(const char *file, unsigned line, const char *section, const char *key,
                        const char *value, void *field) {
        (void) file, (void) line, (void) section, (void) key;

        if (free_and_strdup(field, isempty(value) ? NULL : value) < 0)
                return log_oom();
        return 0;
}

int config_parse_path(const char *file, unsigned line, const char *section, const char *key,
                      const char *value, void *field) {
        if (!isempty(value) && value[0] != '/')
                return config_log_syntax(file, line, EINVAL, "%s= must be an absolute path, got '%s'.", key,
                                         value);
        return config_parse_string(file, line, section, key, value, field);
}

int config_parse_bool(const char *file, unsigned line, const char *section, const char *key,
                      const char *value, void *field) {
        int b;

        (void) section;
        b = parse_boolean(value);
        if (b < 0)
                return config_log_syntax(file, line, b, "%s= expects a boolean (yes/no), got '%s'.", key,
                                         value);
        *(bool *) field = b;
        return 0;
}

int config_parse_sec(const char *file, unsigned line, const char *section, const char *key,
                     const char *value, void *field) {
        usec_t u;
        int r;

        (void) section;
        r = parse_sec(value, &u);
        if (r < 0)
                return config_log_syntax(file, line, r,
                                         "%s= expects a duration such as '30s' or '2min', got '%s'.", key,
                                         value);
        *(usec_t *) field = u;
        return 0;
}

int config_parse_unsigned(const char *file, unsigned line, const char *section, const char *key,
                          const char *value, void *field) {
        unsigned u;
        int r;

        (void) section;
        r = safe_atou(value, &u);
        if (r < 0)
                return config_log_syntax(file, line, r, "%s= expects a whole number, got '%s'.", key, value);
        *(unsigned *) field = u;
        return 0;
}

int config_parse_log_level(const char *file, unsigned line, const char *section, const char *key,
                           const char *value, void *field) {
        int l;

        (void) section;
        l = log_level_from_string(value);
        if (l < 0)
                return config_log_syntax(
                        file, line, l,
                        "%s= expects one of debug, info, notice, warning, err, crit, got '%s'.", key, value);
        *(int *) field = l;
        return 0;
}

int config_parse_strv(const char *file, unsigned line, const char *section, const char *key,
                      const char *value, void *field) {
        char ***l = field;
        _cleanup_strv_free_ char **words = NULL;

        (void) file, (void) line, (void) section, (void) key;

        if (isempty(value)) {
                *l = strv_free(*l);
                return 0;
        }
        if (strv_split(value, " \t", &words) < 0)
                return log_oom();
        for (char **w = words; *w; w++)
                if (strv_extend(l, *w) < 0)
                        return log_oom();
        return 0;
}

int config_dump_string(FILE *f, const void *field) {
        fputs(strempty(*(char *const *) field), f);
        return 0;
}

int config_dump_bool(FILE *f, const void *field) {
        fputs(*(const bool *) field ? "yes" : "no", f);
        return 0;
}

int config_dump_sec(FILE *f, const void *field) {
        char buf[FORMAT_TIMESPAN_MAX];

        fputs(format_timespan(buf, sizeof(buf), *(const usec_t *) field), f);
        return 0;
}

int config_dump_unsigned(FILE *f, const void *field) {
        fprintf(f, "%u", *(const unsigned *) field);
        return 0;
}

int config_dump_log_level(FILE *f, const void *field) {
        fputs(log_level_to_string(*(const int *) field), f);
        return 0;
}

int config_dump_strv(FILE *f, const void *field) {
        char *const *l = *(char *const *const *) field;

        for (size_t i = 0; l && l[i]; i++)
                fprintf(f, "%s%s", i > 0 ? " " : "", l[i]);
        return 0;
}

int config_parse_tristate(const char *file, unsigned line, const char *section, const char *key,
                          const char *value, void *field) {
        int b;

        (void) section;
        if (strcasecmp(value, "auto") == 0) {
                *(int *) field = -1;
                return 0;
        }
        b = parse_boolean(value);
        if (b < 0)
                return config_log_syntax(file, line, b, "%s= expects yes, no or auto, got '%s'.", key,
                                         value);
        *(int *) field = b;
        return 0;
}

int config_dump_tristate(FILE *f, const void *field) {
        int v = *(const int *) field;

        fputs(v < 0 ? "auto" : v ? "yes" : "no", f);
        return 0;
}

int config_parse_size(const char *file, unsigned line, const char *section, const char *key,
                      const char *value, void *field) {
        uint64_t v;
        int r;

        (void) section;
        r = parse_size(value, &v);
        if (r < 0)
                return config_log_syntax(
                        file, line, r, "%s= expects a size such as '10G' or '512M', got '%s'.", key, value);
        *(uint64_t *) field = v;
        return 0;
}

int config_dump_size(FILE *f, const void *field) {
        /* Exact, so that the dump reads back to the same number. */
        fprintf(f, "%llu", (unsigned long long) *(const uint64_t *) field);
        return 0;
}
