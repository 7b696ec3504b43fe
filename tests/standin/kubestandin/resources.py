"""The resources the server knows: built-in kinds and those of installed CRDs.

A ResourceDef carries everything that differs between kinds: names for
discovery, scope, the strategy flags of the real registry (generation,
status subresource, unconditional update, create-on-update, graceful
deletion), the selectable fields, and the printer columns.
"""

import threading

from . import jsonpath


def _str(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _get(obj, *path):
    cur = obj
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


class ResourceDef:
    def __init__(self, group, version, plural, kind, *, singular=None, namespaced=True,
                 short_names=(), categories=(), verbs=None, status=False, generation=False,
                 unconditional_update=True, create_on_update=False, graceful=False,
                 return_deleted=False, keep_status_on_create=False, fields=None,
                 extra_subresources=(), crd=None, table=None):
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = kind
        self.list_kind = kind + "List"
        self.singular = singular or kind.lower()
        self.namespaced = namespaced
        self.short_names = list(short_names)
        self.categories = list(categories)
        self.verbs = verbs or ["create", "delete", "deletecollection", "get", "list", "patch",
                               "update", "watch"]
        self.status = status                    # has a /status subresource
        self.generation = generation            # metadata.generation is maintained
        self.unconditional_update = unconditional_update
        self.create_on_update = create_on_update
        self.graceful = graceful                # pods: deletion waits for the kubelet
        self.return_deleted = return_deleted    # DELETE answers the object, not a Status
        self.keep_status_on_create = keep_status_on_create
        self.field_funcs = dict(fields or {})
        self.extra_subresources = list(extra_subresources)
        self.crd = crd                          # CRD object for custom resources
        self.table = table                      # printer name (see tables.py)
        self.versions = [version]

    @property
    def key(self):
        """Storage key: one store per group and resource, whatever the version."""
        return "%s/%s" % (self.group, self.plural)

    @property
    def api_version(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def custom(self):
        return self.crd is not None

    def selectable_fields(self):
        names = ["metadata.name"]
        if self.namespaced:
            names.append("metadata.namespace")
        return names + list(self.field_funcs)

    def fieldset(self, obj):
        md = obj.get("metadata") or {}
        out = {"metadata.name": md.get("name", "")}
        if self.namespaced:
            out["metadata.namespace"] = md.get("namespace", "")
        for name, fn in self.field_funcs.items():
            out[name] = _str(fn(obj))
        return out


def _pod_fields():
    return {
        "spec.nodeName": lambda o: _get(o, "spec", "nodeName"),
        "spec.restartPolicy": lambda o: _get(o, "spec", "restartPolicy"),
        "spec.schedulerName": lambda o: _get(o, "spec", "schedulerName"),
        "spec.serviceAccountName": lambda o: _get(o, "spec", "serviceAccountName"),
        "spec.hostNetwork": lambda o: bool(_get(o, "spec", "hostNetwork")),
        "status.phase": lambda o: _get(o, "status", "phase"),
        "status.podIP": lambda o: _get(o, "status", "podIP"),
        "status.nominatedNodeName": lambda o: _get(o, "status", "nominatedNodeName"),
    }


def _event_fields():
    f = {}
    for k in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"):
        f["involvedObject." + k] = (lambda key: lambda o: _get(o, "involvedObject", key))(k)
    f["reason"] = lambda o: o.get("reason")
    f["reportingComponent"] = lambda o: o.get("reportingComponent")
    f["source"] = lambda o: _get(o, "source", "component")
    f["type"] = lambda o: o.get("type")
    return f


def builtin_resources():
    R = ResourceDef
    return [
        R("", "v1", "namespaces", "Namespace", namespaced=False, short_names=["ns"],
          status=True, fields={"status.phase": lambda o: _get(o, "status", "phase")},
          table="namespaces", verbs=["create", "delete", "get", "list", "patch", "update",
                                     "watch"]),
        R("", "v1", "nodes", "Node", namespaced=False, short_names=["no"], status=True,
          keep_status_on_create=True, table="nodes",
          fields={"spec.unschedulable": lambda o: bool(_get(o, "spec", "unschedulable"))}),
        R("", "v1", "pods", "Pod", short_names=["po"], categories=["all"], status=True,
          graceful=True, return_deleted=True, fields=_pod_fields(), table="pods",
          extra_subresources=[{"name": "pods/eviction", "singularName": "", "namespaced": True,
                               "group": "policy", "version": "v1", "kind": "Eviction",
                               "verbs": ["create"]}]),
        R("", "v1", "events", "Event", short_names=["ev"], fields=_event_fields(),
          table="events"),
        R("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short_names=["pvc"],
          status=True, table="pvcs"),
        R("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False,
          short_names=["pv"], status=True, table="pvs"),
        R("", "v1", "configmaps", "ConfigMap", short_names=["cm"], table="default"),
        R("", "v1", "secrets", "Secret", table="default",
          fields={"type": lambda o: o.get("type")}),
        R("", "v1", "serviceaccounts", "ServiceAccount", short_names=["sa"], table="default"),
        R("apps", "v1", "daemonsets", "DaemonSet", short_names=["ds"], categories=["all"],
          status=True, generation=True, table="daemonsets"),
        R("coordination.k8s.io", "v1", "leases", "Lease", table="leases",
          unconditional_update=False, create_on_update=True),
        R("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short_names=["pdb"],
          status=True, generation=True, table="pdbs"),
        R("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False,
          short_names=["sc"], table="storageclasses"),
        R("apiextensions.k8s.io", "v1", "customresourcedefinitions",
          "CustomResourceDefinition", namespaced=False, short_names=["crd", "crds"],
          categories=["api-extensions"], status=True, generation=True, table="crds"),
    ]


def crd_resource(crd):
    """A ResourceDef for a CRD object (apiextensions.k8s.io/v1)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    storage = next((v for v in served if v.get("storage")), served[0] if served else {})
    subres = storage.get("subresources") or {}
    fields = {}
    for sf in storage.get("selectableFields") or []:
        path = sf.get("jsonPath", "")
        fields[path.lstrip(".")] = (lambda p: lambda o: jsonpath.first(o, p))(path)
    rd = ResourceDef(spec.get("group", ""), storage.get("name", "v1"), names.get("plural", ""),
                     names.get("kind", ""), singular=names.get("singular") or None,
                     namespaced=spec.get("scope") == "Namespaced",
                     short_names=names.get("shortNames") or (),
                     categories=names.get("categories") or (), status="status" in subres,
                     generation=True, unconditional_update=False, fields=fields, crd=crd,
                     table="crd")
    rd.list_kind = names.get("listKind") or rd.kind + "List"
    rd.versions = [v.get("name") for v in served]
    return rd


def crd_version(rd, version):
    """The CRD's entry for one served version (schema, printer columns)."""
    for v in (rd.crd.get("spec") or {}).get("versions") or []:
        if v.get("name") == version:
            return v
    return {}


class Registry:
    """Resources by group/version/plural, updated as CRDs come and go."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_key = {}
        for rd in builtin_resources():
            self.by_key[rd.key] = rd

    def add_crd(self, crd):
        rd = crd_resource(crd)
        with self.lock:
            self.by_key[rd.key] = rd
        return rd

    def remove(self, key):
        with self.lock:
            self.by_key.pop(key, None)

    def lookup(self, group, version, plural):
        with self.lock:
            rd = self.by_key.get("%s/%s" % (group, plural))
        if rd is None or version not in rd.versions:
            return None
        return rd

    def by_storage_key(self, key):
        with self.lock:
            return self.by_key.get(key)

    def all(self):
        with self.lock:
            return list(self.by_key.values())

    def groups(self):
        """{group: [versions]} for named groups (the core group is served under /api)."""
        out = {}
        for rd in self.all():
            if rd.group:
                for v in rd.versions:
                    if v not in out.setdefault(rd.group, []):
                        out[rd.group].append(v)
        out.setdefault("policy", ["v1"])
        return out
