/* SPDX-License-Identifier: Apache-2.0 */
/* The kubeconfig parser on arbitrary bytes: it must accept or reject with a message, never misbehave.
 * The path points nowhere so that every file reference fails cleanly. */

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kube/kubeconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        KubeCredentials *c = NULL;
        char *error = NULL;
        int r;

        /* Both the current context and a named one, to reach either path. */
        for (unsigned i = 0; i < 2; i++) {
                r = kubeconfig_parse("/nonexistent/kubeconfig", (const char *) data, size,
                                     i == 0 ? NULL : "x", &c, &error);
                if (r >= 0) {
                        assert(c && !error);
                        assert(c->server && c->context && c->path);
                        assert(!c->client_cert == !c->client_key);
                        assert(!c->ca || c->ca_size > 0);
                        (void) kube_credentials_reload_token(c);
                        c = kube_credentials_free(c);
                } else {
                        assert(!c);
                        assert(r == -ENOMEM || (error && !strchr(error, '\n')));
                        free(error);
                        error = NULL;
                }
        }
        return 0;
}
