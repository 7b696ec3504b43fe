/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/rtnl.h>
#include <stdlib.h>
#include <string.h>

#include "../basic/macro.h"
#include "netlink.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_sock *, nl_socket_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_cache *, nl_cache_free);

/* The first address of family on ifindex with global scope, or NULL. */
static struct rtnl_addr *find_address(struct nl_cache *addrs, int ifindex, int family) {
        for (struct nl_object *o = nl_cache_get_first(addrs); o; o = nl_cache_get_next(o)) {
                struct rtnl_addr *a = (struct rtnl_addr *) o;

                if (rtnl_addr_get_ifindex(a) == ifindex && rtnl_addr_get_family(a) == family &&
                    rtnl_addr_get_scope(a) == RT_SCOPE_UNIVERSE && rtnl_addr_get_local(a))
                        return a;
        }
        return NULL;
}

int net_interface_address(const char *ifname, int family, char **ret) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        _cleanup_(nl_cache_freep) struct nl_cache *links = NULL, *addrs = NULL;
        struct rtnl_addr *a = NULL;
        char buf[INET6_ADDRSTRLEN + 8];
        int ifindex;

        sk = nl_socket_alloc();
        if (!sk)
                return -ENOMEM;
        if (nl_connect(sk, NETLINK_ROUTE) < 0)
                return -EIO;
        if (rtnl_link_alloc_cache(sk, AF_UNSPEC, &links) < 0 || rtnl_addr_alloc_cache(sk, &addrs) < 0)
                return -EIO;

        ifindex = rtnl_link_name2i(links, ifname);
        if (ifindex <= 0)
                return -ENODEV;
        if (family == AF_INET || family == AF_UNSPEC)
                a = find_address(addrs, ifindex, AF_INET);
        if (!a && (family == AF_INET6 || family == AF_UNSPEC))
                a = find_address(addrs, ifindex, AF_INET6);
        /* The loopback interface has only host-scoped addresses; accept those there. */
        if (!a && strcmp(ifname, "lo") == 0)
                for (struct nl_object *o = nl_cache_get_first(addrs); o && !a; o = nl_cache_get_next(o))
                        if (rtnl_addr_get_ifindex((struct rtnl_addr *) o) == ifindex &&
                            rtnl_addr_get_family((struct rtnl_addr *) o) ==
                                    (family == AF_INET6 ? AF_INET6 : AF_INET))
                                a = (struct rtnl_addr *) o;
        if (!a)
                return -EADDRNOTAVAIL;

        if (!nl_addr2str(rtnl_addr_get_local(a), buf, sizeof(buf)))
                return -EINVAL;
        buf[strcspn(buf, "/")] = '\0'; /* "10.0.0.2/24" */
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}
