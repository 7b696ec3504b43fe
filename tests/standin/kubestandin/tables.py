"""Server-side printing: meta.k8s.io/v1 Table objects for `kubectl get`.

Built-in kinds get the columns of kubernetes pkg/printers/internalversion;
custom resources get Name plus the CRD's additionalPrinterColumns (or Name
and Age when it declares none), rendered like apiextensions' tableconvertor.
"""

import datetime
import json

from . import jsonpath
from .resources import crd_version

NAME_DESC = ("Name must be unique within a namespace. Is required when creating resources, "
             "although some resources may allow a client to request the generation of an "
             "appropriate name automatically. Name is primarily intended for creation "
             "idempotence and configuration definition. Cannot be updated. More info: "
             "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
AGE_DESC = ("CreationTimestamp is a timestamp representing the server time when this object "
            "was created. It is not guaranteed to be set in happens-before order across "
            "separate operations. Clients may not set this value. It is represented in RFC3339 "
            "form and is in UTC.")


def parse_time(s):
    if not s:
        return None
    try:
        return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds):
    """apimachinery util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return "%ds" % s
    minutes = s // 60
    if minutes < 10:
        return "%dm" % minutes if s % 60 == 0 else "%dm%ds" % (minutes, s % 60)
    if minutes < 180:
        return "%dm" % minutes
    hours = s // 3600
    if hours < 8:
        return "%dh" % hours if minutes % 60 == 0 else "%dh%dm" % (hours, minutes % 60)
    if hours < 48:
        return "%dh" % hours
    if hours < 24 * 8:
        return "%dd" % (hours // 24) if hours % 24 == 0 else "%dd%dh" % (hours // 24, hours % 24)
    if hours < 24 * 365 * 2:
        return "%dd" % (hours // 24)
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return "%dy" % (hours // 24 // 365) if dy == 0 else "%dy%dd" % (hours // 24 // 365, dy)
    return "%dy" % (hours // 24 // 365)


def age(ts):
    t = parse_time(ts)
    if t is None:
        return "<unknown>"
    now = datetime.datetime.now(datetime.timezone.utc)
    return human_duration((now - t).total_seconds())


def col(name, typ="string", desc="", fmt="", priority=0):
    return {"name": name, "type": typ, "format": fmt, "description": desc, "priority": priority}


NAME = col("Name", "string", NAME_DESC, "name")
AGE = col("Age", "string", AGE_DESC)


def _md(o):
    return o.get("metadata") or {}


def _g(o, *path, default=None):
    cur = o
    for p in path:
        if not isinstance(cur, dict):
            return default
        cur = cur.get(p)
    return default if cur is None else cur


# ------------------------------------------------------------ built-in kinds

def _node(o):
    conds = _g(o, "status", "conditions", default=[])
    status = []
    ready = next((c for c in conds if c.get("type") == "Ready"), None)
    if ready is None:
        status.append("Unknown")
    else:
        status.append("Ready" if ready.get("status") == "True" else "NotReady")
    if _g(o, "spec", "unschedulable"):
        status.append("SchedulingDisabled")
    roles = sorted(k.split("/", 1)[1] for k in (_md(o).get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/") and k.split("/", 1)[1])
    addrs = _g(o, "status", "addresses", default=[])

    def addr(t):
        return next((a.get("address") for a in addrs if a.get("type") == t), "<none>")
    info = _g(o, "status", "nodeInfo", default={})
    return [_md(o).get("name"), ",".join(status), ",".join(roles) or "<none>",
            age(_md(o).get("creationTimestamp")), info.get("kubeletVersion", ""),
            addr("InternalIP"), addr("ExternalIP"), info.get("osImage", "<unknown>"),
            info.get("kernelVersion", "<unknown>"), info.get("containerRuntimeVersion", "<unknown>")]


NODE_COLS = [NAME, col("Status"), col("Roles"), AGE, col("Version"),
             col("Internal-IP", priority=1), col("External-IP", priority=1),
             col("OS-Image", priority=1), col("Kernel-Version", priority=1),
             col("Container-Runtime", priority=1)]


def _pod(o):
    spec = o.get("spec") or {}
    st = o.get("status") or {}
    total = len(spec.get("containers") or [])
    cstats = st.get("containerStatuses") or []
    ready = sum(1 for c in cstats if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in cstats)
    reason = st.get("reason") or st.get("phase") or "Unknown"
    for c in cstats:
        w = (c.get("state") or {}).get("waiting") or {}
        if w.get("reason"):
            reason = w["reason"]
    if _md(o).get("deletionTimestamp"):
        reason = "Terminating" if st.get("reason") != "NodeLost" else "Unknown"
    return [_md(o).get("name"), "%d/%d" % (ready, total), reason, str(restarts),
            age(_md(o).get("creationTimestamp")), st.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>", st.get("nominatedNodeName") or "<none>",
            "<none>" if not spec.get("readinessGates") else "%d/%d" % (0, len(spec["readinessGates"]))]


POD_COLS = [NAME, col("Ready"), col("Status"), col("Restarts", "string"), AGE,
            col("IP", priority=1), col("Node", priority=1),
            col("Nominated Node", priority=1), col("Readiness Gates", priority=1)]


def _namespace(o):
    return [_md(o).get("name"), _g(o, "status", "phase", default=""),
            age(_md(o).get("creationTimestamp"))]


def _lease(o):
    return [_md(o).get("name"), _g(o, "spec", "holderIdentity", default=""),
            age(_md(o).get("creationTimestamp"))]


def _daemonset(o):
    st = o.get("status") or {}
    sel = _g(o, "spec", "template", "spec", "nodeSelector", default={})
    containers = _g(o, "spec", "template", "spec", "containers", default=[])
    msel = _g(o, "spec", "selector", "matchLabels", default={})
    return [_md(o).get("name"), st.get("desiredNumberScheduled", 0),
            st.get("currentNumberScheduled", 0), st.get("numberReady", 0),
            st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0),
            ",".join("%s=%s" % kv for kv in sorted(sel.items())) or "<none>",
            age(_md(o).get("creationTimestamp")),
            ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers),
            ",".join("%s=%s" % kv for kv in sorted(msel.items())) or "<none>"]


DS_COLS = [NAME, col("Desired", "integer"), col("Current", "integer"), col("Ready", "integer"),
           col("Up-to-date", "integer"), col("Available", "integer"), col("Node Selector"),
           AGE, col("Containers", priority=1), col("Images", priority=1),
           col("Selector", priority=1)]


def _pdb(o):
    spec = o.get("spec") or {}
    return [_md(o).get("name"), _s(spec.get("minAvailable"), "N/A"),
            _s(spec.get("maxUnavailable"), "N/A"),
            _g(o, "status", "disruptionsAllowed", default=0),
            age(_md(o).get("creationTimestamp"))]


PDB_COLS = [NAME, col("Min Available"), col("Max Unavailable"),
            col("Allowed Disruptions", "integer"), AGE]


def _s(v, default):
    return default if v is None else str(v)


def _event(o):
    inv = o.get("involvedObject") or {}
    last = o.get("lastTimestamp") or o.get("eventTime") or _md(o).get("creationTimestamp")
    return [age(last), o.get("type", ""), o.get("reason", ""),
            "%s/%s" % ((inv.get("kind") or "").lower(), inv.get("name", "")),
            o.get("message", ""), inv.get("fieldPath", ""),
            (o.get("source") or {}).get("component", ""),
            age(o.get("firstTimestamp") or last), o.get("count", 1), _md(o).get("name")]


EVENT_COLS = [col("Last Seen"), col("Type"), col("Reason"), col("Object"), col("Message"),
              col("Subobject", priority=1), col("Source", priority=1),
              col("First Seen", priority=1), col("Count", "integer", priority=1),
              col("Name", priority=1)]


def _pvc(o):
    st = o.get("status") or {}
    spec = o.get("spec") or {}
    return [_md(o).get("name"), st.get("phase", ""), spec.get("volumeName", ""),
            (st.get("capacity") or {}).get("storage", ""),
            ",".join(_modes(st.get("accessModes") or [])), spec.get("storageClassName") or "<unset>",
            "<unset>", age(_md(o).get("creationTimestamp")), spec.get("volumeMode", "Filesystem")]


PVC_COLS = [NAME, col("Status"), col("Volume"), col("Capacity"), col("Access Modes"),
            col("StorageClass"), col("VolumeAttributesClass"), AGE,
            col("VolumeMode", priority=1)]


def _modes(modes):
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
             "ReadWriteOncePod": "RWOP"}
    return [short.get(m, m) for m in modes]


def _pv(o):
    spec = o.get("spec") or {}
    claim = spec.get("claimRef") or {}
    return [_md(o).get("name"), (spec.get("capacity") or {}).get("storage", ""),
            ",".join(_modes(spec.get("accessModes") or [])),
            spec.get("persistentVolumeReclaimPolicy", ""), _g(o, "status", "phase", default=""),
            "%s/%s" % (claim["namespace"], claim["name"]) if claim.get("name") else "",
            spec.get("storageClassName", ""), "<unset>", _g(o, "status", "reason", default=""),
            age(_md(o).get("creationTimestamp")), spec.get("volumeMode", "Filesystem")]


PV_COLS = [NAME, col("Capacity"), col("Access Modes"), col("Reclaim Policy"), col("Status"),
           col("Claim"), col("StorageClass"), col("VolumeAttributesClass"), col("Reason"), AGE,
           col("VolumeMode", priority=1)]


def _sc(o):
    default = (_md(o).get("annotations") or {}).get(
        "storageclass.kubernetes.io/is-default-class") == "true"
    return [_md(o).get("name") + (" (default)" if default else ""), o.get("provisioner", ""),
            o.get("reclaimPolicy", "Delete"), o.get("volumeBindingMode", "Immediate"),
            bool(o.get("allowVolumeExpansion")), age(_md(o).get("creationTimestamp"))]


SC_COLS = [NAME, col("Provisioner"), col("ReclaimPolicy"), col("VolumeBindingMode"),
           col("AllowVolumeExpansion", "boolean"), AGE]


def _crd(o):
    return [_md(o).get("name"), _md(o).get("creationTimestamp", "")]


CRD_COLS = [NAME, col("Created At", "date")]


def _default(o):
    return [_md(o).get("name"), age(_md(o).get("creationTimestamp"))]


PRINTERS = {
    "nodes": (NODE_COLS, _node), "pods": (POD_COLS, _pod),
    "namespaces": ([NAME, col("Status"), AGE], _namespace),
    "leases": ([NAME, col("Holder"), AGE], _lease),
    "daemonsets": (DS_COLS, _daemonset), "pdbs": (PDB_COLS, _pdb),
    "events": (EVENT_COLS, _event), "pvcs": (PVC_COLS, _pvc), "pvs": (PV_COLS, _pv),
    "storageclasses": (SC_COLS, _sc), "crds": (CRD_COLS, _crd),
    "default": ([NAME, AGE], _default),
}


# ----------------------------------------------------------- custom resources

def _crd_columns(rd, version):
    v = crd_version(rd, version)
    cols = v.get("additionalPrinterColumns")
    if not cols:
        return [NAME, col("Age", "date", AGE_DESC)], [None, ".metadata.creationTimestamp"]
    defs = [NAME] + [col(c["name"], c.get("type", "string"), c.get("description", ""),
                         c.get("format", ""), int(c.get("priority", 0))) for c in cols]
    return defs, [None] + [c.get("jsonPath", "") for c in cols]


def _go_json(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _crd_cell(typ, value):
    if value is None:
        return None
    if typ == "string":
        return value if isinstance(value, str) else _go_json(value)
    if typ == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return int(value)
        return None
    if typ == "number":
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else None
    if typ == "boolean":
        return value if isinstance(value, bool) else None
    if typ == "date":
        if not isinstance(value, str):
            return None
        return age(value) if parse_time(value) else "<invalid>"
    return None


def _crd_row(rd, paths, defs, o):
    cells = [_md(o).get("name")]
    for path, d in zip(paths[1:], defs[1:]):
        try:
            values = jsonpath.find(o, path)
        except jsonpath.JsonPathError:
            values = []
        cells.append(_crd_cell(d["type"], values[0]) if values else None)
    return cells


# ------------------------------------------------------------------- tables

def _row_object(o, include):
    if include == "None":
        return None
    if include == "Object":
        return o
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata") or {}}


def build(rd, version, objs, include="Metadata", with_defs=True, list_meta=None):
    if rd.custom:
        defs, paths = _crd_columns(rd, version)

        def cells(o):
            return _crd_row(rd, paths, defs, o)
    else:
        defs, cells = PRINTERS.get(rd.table or "default", PRINTERS["default"])
    rows = []
    for o in objs:
        row = {"cells": cells(o)}
        obj = _row_object(o, include)
        if obj is not None:
            row["object"] = obj
        rows.append(row)
    table = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta or {}}
    if with_defs:
        table["columnDefinitions"] = defs
    table["rows"] = rows
    return table
