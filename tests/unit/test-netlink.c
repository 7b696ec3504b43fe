/* SPDX-License-Identifier: Apache-2.0 */
/* net/netlink.c against the real kernel: an interface's address, in a network namespace of the
 * test's own for an interface made for the purpose. */

#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/netlink.h"

static void loopback_has_127_0_0_1(void **state) {
        char *ip = NULL;

        (void) state;
        assert_int_equal(net_interface_address("lo", AF_INET, &ip), 0);
        assert_string_equal(ip, "127.0.0.1");
        free(ip);
}

static void missing_interface_is_enodev(void **state) {
        char *ip = NULL;

        (void) state;
        assert_int_equal(net_interface_address("nosuchif0", AF_UNSPEC, &ip), -ENODEV);
        assert_null(ip);
}

/* In a child, in a network namespace of its own: a veth interface with a documentation
 * address (192.0.2.0/24), and one with no address. */
static int child(void) {
        char *ip = NULL;

        if (unshare(CLONE_NEWNET) < 0)
                return 77;
        if (system("ip link add stor0 type veth peer name bare0 && ip addr add 192.0.2.10/24 dev stor0 &&"
                   " ip link set stor0 up") != 0)
                return 77;
        if (net_interface_address("stor0", AF_UNSPEC, &ip) != 0 || strcmp(ip, "192.0.2.10") != 0)
                return 1;
        free(ip);
        ip = NULL;
        if (net_interface_address("bare0", AF_INET, &ip) != -EADDRNOTAVAIL)
                return 2;
        return 0;
}

static void interface_address_in_a_namespace(void **state) {
        pid_t pid;
        int status;

        (void) state;
        if (geteuid() != 0)
                skip();
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
                _exit(child());
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 77)
                skip();
        assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(loopback_has_127_0_0_1),
                cmocka_unit_test(missing_interface_is_enodev),
                cmocka_unit_test(interface_address_in_a_namespace),
        };
        return cmocka_run_group_tests_name("netlink", tests, NULL, NULL);
}
