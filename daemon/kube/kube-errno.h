/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The only table from Kubernetes API answers and libcurl results to errno values:
 *
 *   HTTP 400 BadRequest, 422 Invalid         -EINVAL   the request is wrong; do not retry
 *   HTTP 401 Unauthorized                    -EACCES   credentials rejected (reload them)
 *   HTTP 403 Forbidden                       -EPERM    RBAC says no
 *   HTTP 404 NotFound                        -ENOENT
 *   HTTP 409 AlreadyExists                   -EEXIST
 *   HTTP 409 Conflict, 410 Gone/Expired      -ESTALE   re-read (or relist) and try again
 *   HTTP 415 UnsupportedMediaType            -EPROTONOSUPPORT (e.g. strategic merge on a CR)
 *   HTTP 429 TooManyRequests, 503            -EAGAIN   retry later, honour Retry-After
 *   HTTP 504 Timeout                         -ETIMEDOUT
 *   other HTTP errors                        -EIO
 *
 * Transport failures keep the operating system's errno where libcurl has one (ECONNREFUSED,
 * EHOSTUNREACH, ...); TLS failures are -EPROTO, timeouts -ETIMEDOUT.
 */

#include <curl/curl.h>

int kube_errno_from_http(long http_code, const char *reason);

/* os_errno is CURLINFO_OS_ERRNO (0 when unknown). */
int kube_errno_from_curl(CURLcode code, long os_errno);
