/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The host's network configuration, read from the kernel with libnl (rtnetlink). */

#include <sys/socket.h>

/*
 * The first global address of the interface (family AF_INET or AF_INET6; AF_UNSPEC: IPv4 if it
 * has one, else IPv6), as text without prefix length. -ENODEV when there is no such interface,
 * -EADDRNOTAVAIL when it has no such address.
 */
int net_interface_address(const char *ifname, int family, char **ret);
