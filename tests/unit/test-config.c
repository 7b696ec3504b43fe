/* SPDX-License-Identifier: Apache-2.0 */
/* config/: the INI parser, drop-ins, the key table, dump round trips, the shipped file. */

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "basic/macro.h"
#include "basic/string-util.h"
#include "config/conf-parser.h"
#include "config/hwameid-conf.h"
#include "log/log.h"

typedef struct Sample {
        char *name;
        bool flag;
        usec_t timeout;
        unsigned count;
        char **disks;
        int level;
} Sample;

static const ConfigItem sample_items[] = {
        { "A", "Name", config_parse_string, config_dump_string, offsetof(Sample, name) },
        { "A", "Flag", config_parse_bool, config_dump_bool, offsetof(Sample, flag) },
        { "A", "Timeout", config_parse_sec, config_dump_sec, offsetof(Sample, timeout) },
        { "B", "Count", config_parse_unsigned, config_dump_unsigned, offsetof(Sample, count) },
        { "B", "Disks", config_parse_strv, config_dump_strv, offsetof(Sample, disks) },
        { "B", "Level", config_parse_log_level, config_dump_log_level, offsetof(Sample, level) },
};

static void sample_done(Sample *s) {
        free(s->name);
        strv_free(s->disks);
        *s = (Sample){};
}

static int parse_text(const char *text, Sample *s) {
        FILE *f = fmemopen((void *) text, strlen(text), "r");
        int r;

        assert_non_null(f);
        r = config_parse_stream("test.conf", f, sample_items, ELEMENTSOF(sample_items), s);
        fclose(f);
        return r;
}

/* Captures what the code under test logs, to check that errors name file, line and key. */
static char captured[8192];
static int saved_stderr = -1;
static FILE *capture_file;

static void capture_start(void) {
        capture_file = tmpfile();
        assert_non_null(capture_file);
        fflush(stderr);
        saved_stderr = dup(STDERR_FILENO);
        dup2(fileno(capture_file), STDERR_FILENO);
}

static const char *capture_stop(void) {
        size_t n;

        fflush(stderr);
        dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
        rewind(capture_file);
        n = fread(captured, 1, sizeof(captured) - 1, capture_file);
        captured[n] = '\0';
        fclose(capture_file);
        return captured;
}

static void parses_every_value_type(void **state) {
        Sample s = {};

        (void) state;
        assert_int_equal(parse_text("# comment\n"
                                    "; also a comment\n"
                                    "\n"
                                    "[A]\n"
                                    "  Name = node-1  \n"
                                    "Flag=yes\n"
                                    "Timeout=1min 30s\n"
                                    "[B]\n"
                                    "Count=7\n"
                                    "Disks=/dev/sdb /dev/sdc\n"
                                    "Disks=/dev/nvme0n1\n"
                                    "Level=debug\n",
                                    &s),
                         0);
        assert_string_equal(s.name, "node-1");
        assert_true(s.flag);
        assert_int_equal(s.timeout, 90 * USEC_PER_SEC);
        assert_int_equal(s.count, 7);
        assert_int_equal(strv_length(s.disks), 3);
        assert_string_equal(s.disks[2], "/dev/nvme0n1");
        assert_int_equal(s.level, LOG_DEBUG);
        sample_done(&s);
}

static void empty_assignment_resets_a_list(void **state) {
        Sample s = {};

        (void) state;
        assert_int_equal(parse_text("[B]\nDisks=/dev/sdb\nDisks=\nDisks=/dev/sdc\n", &s), 0);
        assert_int_equal(strv_length(s.disks), 1);
        assert_string_equal(s.disks[0], "/dev/sdc");
        sample_done(&s);
}

static void every_error_names_file_line_and_key(void **state) {
        Sample s = {};
        const char *out;

        (void) state;
        capture_start();
        assert_int_equal(parse_text("Name=outside\n"
                                    "[A]\n"
                                    "Flag=perhaps\n"
                                    "Nmae=typo\n"
                                    "[C]\n"
                                    "X=1\n"
                                    "[B]\n"
                                    "Count=-3\n"
                                    "no equals sign\n"
                                    "[broken\n"
                                    "Level=loud\n",
                                    &s),
                         -EINVAL);
        out = capture_stop();
        assert_non_null(strstr(out, "test.conf:1: Assignment to 'Name' outside of any section."));
        assert_non_null(strstr(out, "test.conf:3: Flag= expects a boolean (yes/no), got 'perhaps'."));
        assert_non_null(strstr(out, "test.conf:4: Unknown key 'Nmae' in section [A]."));
        assert_non_null(strstr(out, "test.conf:5: Unknown section [C]."));
        assert_null(strstr(out, "test.conf:6:")); /* keys of an unknown section: reported once */
        assert_non_null(strstr(out, "test.conf:8: Count= expects a whole number, got '-3'."));
        assert_non_null(strstr(out, "test.conf:9: Missing '=' in 'no equals sign'."));
        assert_non_null(strstr(out, "test.conf:10: Invalid section header '[broken'."));
        assert_non_null(strstr(out, "test.conf:11: Level= expects one of"));
        sample_done(&s);
}

static void rejects_nul_bytes_and_huge_lines(void **state) {
        static const char nul[] = "[A]\nName=a\0b\n";
        Sample s = {};
        FILE *f;
        char *big;
        size_t n = 70 * 1024;

        (void) state;
        capture_start();
        f = fmemopen((void *) nul, sizeof(nul) - 1, "r");
        assert_int_equal(config_parse_stream("nul.conf", f, sample_items, ELEMENTSOF(sample_items), &s), -EINVAL);
        fclose(f);

        big = malloc(n + 16);
        assert_non_null(big);
        memcpy(big, "[A]\nName=", 9);
        memset(big + 9, 'x', n);
        strcpy(big + 9 + n, "\n");
        assert_int_equal(parse_text(big, &s), -EINVAL);
        free(big);
        assert_non_null(strstr(capture_stop(), "Line is longer than"));
        assert_non_null(strstr(captured, "nul.conf:2: Line contains a NUL byte."));
        sample_done(&s);
}

static char tmpdir[] = "/tmp/test-config-XXXXXX";

static void write_file(const char *dir, const char *name, const char *text) {
        char path[512];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static int setup_tmpdir(void **state) {
        (void) state;
        return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmpdir(void **state) {
        char cmd[600];

        (void) state;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        return system(cmd) == 0 ? 0 : -1;
}

static void dropins_apply_in_lexical_order(void **state) {
        char path[1024], dir[512];
        Config c;

        (void) state;
        write_file(tmpdir, "hwameid.conf", "[Node]\nName=main\n[Log]\nLevel=warning\n");
        snprintf(dir, sizeof(dir), "%s/hwameid.conf.d", tmpdir);
        assert_int_equal(mkdir(dir, 0755), 0);
        write_file(dir, "20-b.conf", "[Node]\nName=from-b\n");
        write_file(dir, "10-a.conf", "[Node]\nName=from-a\n[Log]\nLevel=debug\n");
        write_file(dir, "30-ignored.conf.disabled", "[Node]\nName=never\n");
        write_file(dir, ".hidden.conf", "[Node]\nName=hidden\n");

        snprintf(path, sizeof(path), "%s/hwameid.conf", tmpdir);
        assert_int_equal(config_load(&c, path), 0);
        assert_string_equal(c.node_name, "from-b");
        assert_int_equal(c.log_level, LOG_DEBUG);
        config_done(&c);
}

static void invalid_dropin_fails_the_whole_load(void **state) {
        char path[1024], dir[512];
        Config c;

        (void) state;
        snprintf(dir, sizeof(dir), "%s/hwameid.conf.d", tmpdir);
        write_file(dir, "50-bad.conf", "[Node]\nName=Not_Valid\n");
        snprintf(path, sizeof(path), "%s/hwameid.conf", tmpdir);
        capture_start();
        assert_int_equal(config_load(&c, path), -EINVAL);
        assert_non_null(strstr(capture_stop(), "hwameid.conf.d/50-bad.conf:2: Name= must be a valid Kubernetes node name"));
        assert_null(c.node_name); /* left empty */
        snprintf(path, sizeof(path), "%s/50-bad.conf", dir);
        assert_int_equal(unlink(path), 0);
}

static void missing_file_and_directory_are_errors(void **state) {
        char path[512];
        Config c;

        (void) state;
        snprintf(path, sizeof(path), "%s/nope.conf", tmpdir);
        capture_start();
        assert_int_equal(config_load(&c, path), -ENOENT);
        assert_int_equal(config_load(&c, tmpdir), -EISDIR);
        const char *out = capture_stop();
        assert_non_null(strstr(out, "nope.conf: Failed to open configuration file: No such file or directory"));
        assert_non_null(strstr(out, "Is a directory, expected a configuration file."));
}

static void relative_paths_and_empty_required_values_are_refused(void **state) {
        char path[512];
        Config c;

        (void) state;
        write_file(tmpdir, "rel.conf", "[Kubernetes]\nKubeconfig=kubeconfig\n");
        write_file(tmpdir, "empty.conf", "[Control]\nSocket=\n");
        capture_start();
        snprintf(path, sizeof(path), "%s/rel.conf", tmpdir);
        assert_int_equal(config_load(&c, path), -EINVAL);
        snprintf(path, sizeof(path), "%s/empty.conf", tmpdir);
        assert_int_equal(config_load(&c, path), -EINVAL);
        const char *out = capture_stop();
        assert_non_null(strstr(out, "rel.conf:2: Kubeconfig= must be an absolute path, got 'kubeconfig'."));
        assert_non_null(strstr(out, "[Control] Socket= must not be empty."));
}

static void dump_reads_back_to_the_same_configuration(void **state) {
        char path[512], dumped[4096], again[4096];
        Config c, d;
        FILE *f;

        (void) state;
        write_file(tmpdir, "full.conf",
                   "[Node]\nName=k8s-node-1\n[Kubernetes]\nKubeconfig=/etc/kubernetes/kubelet.conf\n"
                   "[Control]\nSocket=/run/x/control.sock\n[Log]\nLevel=notice\n");
        snprintf(path, sizeof(path), "%s/full.conf", tmpdir);
        assert_int_equal(config_load(&c, path), 0);

        f = fmemopen(dumped, sizeof(dumped), "w");
        assert_int_equal(config_dump_all(f, &c), 0);
        fclose(f);
        write_file(tmpdir, "dumped.conf", dumped);
        snprintf(path, sizeof(path), "%s/dumped.conf", tmpdir);
        assert_int_equal(config_load(&d, path), 0);
        f = fmemopen(again, sizeof(again), "w");
        assert_int_equal(config_dump_all(f, &d), 0);
        fclose(f);

        assert_string_equal(dumped, again);
        assert_string_equal(d.node_name, "k8s-node-1");
        assert_string_equal(d.kubeconfig, "/etc/kubernetes/kubelet.conf");
        assert_string_equal(d.control_socket, "/run/x/control.sock");
        assert_int_equal(d.log_level, LOG_NOTICE);
        config_done(&c);
        config_done(&d);
}

/* The example configuration that the packages install parses, and documents every key. */
static void shipped_configuration_is_valid_and_complete(void **state) {
        char dumped[4096], *line, *save = NULL;
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        Config c;
        FILE *f;

        (void) state;
        assert_int_equal(config_load(&c, "conf/hwameid.conf"), 0);

        f = fopen("conf/hwameid.conf", "re");
        assert_non_null(f);
        assert_true(getdelim(&text, &len, '\0', f) > 0);
        fclose(f);

        f = fmemopen(dumped, sizeof(dumped), "w");
        assert_int_equal(config_dump_all(f, &c), 0);
        fclose(f);
        for (line = strtok_r(dumped, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char key[128];
                if (line[0] == '[') {
                        assert_non_null(strstr(text, line));
                        continue;
                }
                snprintf(key, sizeof(key), "\n#%.*s=", (int) strcspn(line, "="), line);
                if (!strstr(text, key))
                        fail_msg("conf/hwameid.conf does not document key '%s'", key + 2);
        }
        config_done(&c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(parses_every_value_type),
                cmocka_unit_test(empty_assignment_resets_a_list),
                cmocka_unit_test(every_error_names_file_line_and_key),
                cmocka_unit_test(rejects_nul_bytes_and_huge_lines),
                cmocka_unit_test(dropins_apply_in_lexical_order),
                cmocka_unit_test(invalid_dropin_fails_the_whole_load),
                cmocka_unit_test(missing_file_and_directory_are_errors),
                cmocka_unit_test(relative_paths_and_empty_required_values_are_refused),
                cmocka_unit_test(dump_reads_back_to_the_same_configuration),
                cmocka_unit_test(shipped_configuration_is_valid_and_complete),
        };
        return cmocka_run_group_tests_name("config", tests, setup_tmpdir, teardown_tmpdir);
}
