"""kube-standin: a stand-in Kubernetes API server for hwameid's tests.

Modules: store (objects, resourceVersion, history, watchers, persistence),
api (create/update/patch/delete/eviction rules), resources (kinds),
selectors, patch, schema (CRD defaulting/pruning/validation), tables
(server-side printing), jsonpath, faults (fault switches, request log),
certs (openssl, kubeconfig), server (HTTPS, routing, watch), main (CLI).
"""
