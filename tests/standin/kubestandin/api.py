"""The registry strategies: what create, update, patch and delete do to an
object, per kind (apiserver pkg/registry/generic/registry/store.go and the
strategies of the kinds served).  HTTP is handled elsewhere; this module works
on dicts and raises ApiError.
"""

import copy
import datetime
import json
import random
import re
import threading
import uuid

from . import errors, patch as patchmod, schema
from .errors import ApiError
from .resources import crd_version

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MICROTIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")

PATCH_JSON = "application/json-patch+json"
PATCH_MERGE = "application/merge-patch+json"
PATCH_STRATEGIC = "application/strategic-merge-patch+json"
PATCH_APPLY = "application/apply-patch+yaml"

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease",
                     "hwameid-system")


def now_time():
    """metav1.Time: RFC 3339, whole seconds, UTC."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rand_suffix(n=5):
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


class Settings:
    """Knobs tests may change at run time (see the admin API)."""

    def __init__(self):
        self.pod_deletion_delay = 1.0     # simulated kubelet; < 0: never finish pod deletion
        self.bookmark_interval = 60.0
        self.watch_chunk_bytes = 0        # > 0: split every event into chunks of this size
        self.pack_events = True           # write all queued events in one chunk

    def as_dict(self):
        return {"podDeletionDelaySeconds": self.pod_deletion_delay,
                "bookmarkIntervalSeconds": self.bookmark_interval,
                "watchChunkBytes": self.watch_chunk_bytes,
                "packEvents": self.pack_events}

    def update(self, d):
        if "podDeletionDelaySeconds" in d:
            self.pod_deletion_delay = float(d["podDeletionDelaySeconds"])
        if "bookmarkIntervalSeconds" in d:
            self.bookmark_interval = float(d["bookmarkIntervalSeconds"])
        if "watchChunkBytes" in d:
            self.watch_chunk_bytes = int(d["watchChunkBytes"])
        if "packEvents" in d:
            self.pack_events = bool(d["packEvents"])


def _strip_for_generation(obj, rd):
    o = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
    if rd.status:
        o.pop("status", None)
    return o


class Api:
    def __init__(self, store, registry, settings=None):
        self.store = store
        self.registry = registry
        self.settings = settings or Settings()
        self._timers = set()
        self._timers_lock = threading.Lock()

    # ------------------------------------------------------------ helpers

    def _lookup(self, group, version, plural):
        return self.registry.lookup(group, version, plural)

    def _out(self, rd, obj, version=None):
        """The object as the client sees it (apiVersion of the request)."""
        if obj is None:
            return None
        o = dict(obj)
        o["apiVersion"] = "%s/%s" % (rd.group, version or rd.version) if rd.group else "v1"
        o["kind"] = rd.kind
        return o

    def _ns_exists(self, ns):
        return self.store.get("/namespaces", "", ns) is not None

    def ensure_namespaces(self):
        for ns in SYSTEM_NAMESPACES:
            if not self._ns_exists(ns):
                rd = self.registry.by_storage_key("/namespaces")
                self.create(rd, None, {"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": ns}}, {})

    def install_crds(self, crds):
        rd = self.registry.by_storage_key("apiextensions.k8s.io/customresourcedefinitions")
        for crd in crds:
            name = crd["metadata"]["name"]
            if self.store.get(rd.key, "", name) is None:
                self.create(rd, None, crd, {})

    def restore_crds(self):
        """Register the CRDs found in loaded state."""
        items, _ = self.store.list("apiextensions.k8s.io/customresourcedefinitions")
        for crd in items:
            self.registry.add_crd(crd)

    # -------------------------------------------------------- validation

    def _validate_name(self, rd, name):
        if rd.plural == "namespaces":
            ok = DNS1123_LABEL.match(name) and len(name) <= 63
            what = ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character "
                    "(e.g. 'my-name',  or '123-abc', regex used for validation is "
                    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
        else:
            ok = DNS1123_SUBDOMAIN.match(name) and len(name) <= 253
            what = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                    "characters, '-' or '.', and must start and end with an alphanumeric "
                    "character (e.g. 'example.com', regex used for validation is "
                    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
        if not ok:
            raise errors.invalid(rd, name, [("metadata.name", "FieldValueInvalid",
                                             'Invalid value: "%s": %s' % (name, what))])

    def _validate(self, rd, obj, query, old=None):
        """Kind-specific validation and normalisation; may modify obj."""
        name = obj["metadata"]["name"]
        if rd.key == "coordination.k8s.io/leases":
            spec = obj.get("spec") or {}
            for f in ("acquireTime", "renewTime"):
                v = spec.get(f)
                if v is None:
                    continue
                if not isinstance(v, str) or not MICROTIME.match(v):
                    raise errors.bad_request(
                        'Lease in version "v1" cannot be handled as a Lease: parsing time '
                        '"%s" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "%s" as '
                        '"2006-01-02T15:04:05.000000Z07:00"' % (v, v))
                t = datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
                spec[f] = t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            causes = []
            d = spec.get("leaseDurationSeconds")
            if d is not None and d <= 0:
                causes.append(("spec.leaseDurationSeconds", "FieldValueInvalid",
                               "Invalid value: %d: must be greater than 0" % d))
            t = spec.get("leaseTransitions")
            if t is not None and t < 0:
                causes.append(("spec.leaseTransitions", "FieldValueInvalid",
                               "Invalid value: %d: must be greater than or equal to 0" % t))
            if causes:
                raise errors.invalid(rd, name, causes)
        if rd.custom:
            version = (obj.get("apiVersion") or "").split("/")[-1]
            v = crd_version(rd, version) or crd_version(rd, rd.version)
            sch = (v.get("schema") or {}).get("openAPIV3Schema")
            res = schema.apply(obj, sch)
            if res.unknown and query.get("fieldValidation", "").lower() == "strict":
                raise errors.bad_request("strict decoding error: " + ", ".join(
                    'unknown field "%s"' % f for f in res.unknown))
            if res.causes:
                raise errors.invalid(rd, name, res.causes)
        if rd.key == "apiextensions.k8s.io/customresourcedefinitions":
            spec = obj.get("spec") or {}
            want = "%s.%s" % ((spec.get("names") or {}).get("plural", ""), spec.get("group", ""))
            if name != want:
                raise errors.invalid(rd, name, [("metadata.name", "FieldValueInvalid",
                                                 'Invalid value: "%s": must be spec.names.'
                                                 'plural+"."+spec.group' % name)])
            if not spec.get("versions"):
                raise errors.invalid(rd, name, [("spec.versions", "FieldValueRequired",
                                                 "Required value: must have exactly one "
                                                 "version marked as storage version")])

    # ------------------------------------------------------------ strategies

    def _prepare_create(self, rd, obj):
        if rd.status and not rd.keep_status_on_create:
            obj.pop("status", None)
        if rd.plural == "pods":
            spec = obj.setdefault("spec", {})
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif rd.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
                obj["metadata"]["name"]
        elif rd.plural in ("persistentvolumeclaims", "persistentvolumes"):
            obj["status"] = {"phase": "Pending"}
        elif rd.key == "apiextensions.k8s.io/customresourcedefinitions":
            names = dict((obj.get("spec") or {}).get("names") or {})
            names.setdefault("singular", names.get("kind", "").lower())
            names.setdefault("listKind", names.get("kind", "") + "List")
            t = now_time()
            obj["status"] = {
                "acceptedNames": names, "storedVersions": [
                    v["name"] for v in obj["spec"].get("versions", []) if v.get("storage")],
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": t,
                     "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": t,
                     "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted"}]}
        elif rd.plural == "poddisruptionbudgets":
            obj["status"] = self._pdb_status(obj)

    def _preserve_on_update(self, rd, new, old, subresource):
        """Copy what the client may not change; returns the object to store."""
        if subresource == "status":
            out = copy.deepcopy(old)
            if "status" in new:
                out["status"] = new["status"]
            else:
                out.pop("status", None)
            out["metadata"]["resourceVersion"] = new["metadata"].get("resourceVersion")
            return out
        md, omd = new["metadata"], old["metadata"]
        for f in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "namespace"):
            if f in omd:
                md[f] = omd[f]
            else:
                md.pop(f, None)
        if rd.status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if rd.plural == "poddisruptionbudgets":
            new["status"] = self._pdb_status(new)
        return new

    # ------------------------------------------------------------ operations

    def get(self, rd, ns, name):
        obj = self.store.get(rd.key, ns, name)
        if obj is None:
            raise errors.not_found(rd, name)
        return obj

    def create(self, rd, ns, body, query, status_code=201):
        if not isinstance(body, dict):
            raise errors.bad_request("Object 'Kind' is missing in '%s'" % json.dumps(body))
        obj = copy.deepcopy(body)
        md = obj.get("metadata")
        if not isinstance(md, dict):
            md = obj["metadata"] = {}
        if rd.namespaced:
            if md.get("namespace") and ns and md["namespace"] != ns:
                raise errors.bad_request("the namespace of the provided object does not match "
                                         "the namespace sent on the request")
            md["namespace"] = ns or md.get("namespace") or "default"
        else:
            md.pop("namespace", None)
        if not md.get("name"):
            if md.get("generateName"):
                md["name"] = md["generateName"] + _rand_suffix()
            else:
                raise errors.invalid(rd, "", [("metadata.name", "FieldValueRequired",
                                               "Required value: name or generateName is "
                                               "required")])
        self._validate_name(rd, md["name"])
        obj["apiVersion"] = obj.get("apiVersion") or rd.api_version
        obj["kind"] = rd.kind
        if rd.namespaced and not self._ns_exists(md["namespace"]):
            raise ApiError(404, "NotFound", 'namespaces "%s" not found' % md["namespace"],
                           {"name": md["namespace"], "kind": "namespaces"})
        for f in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion",
                  "managedFields", "selfLink"):
            md.pop(f, None)
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_time()
        if rd.generation:
            md["generation"] = 1
        else:
            md.pop("generation", None)
        self._prepare_create(rd, obj)
        self._validate(rd, obj, query)
        obj["apiVersion"] = rd.api_version
        if _dry_run(query):
            md["resourceVersion"] = str(self.store.rv)
            return obj
        with self.store.cond:
            if self.store.get(rd.key, md.get("namespace"), md["name"]) is not None:
                raise errors.already_exists(rd, md["name"])
            md["resourceVersion"] = str(self.store.next_rv())
            self.store.commit(rd.key, "ADDED", obj, None)
        self._after_write(rd, obj, None)
        return obj

    def update(self, rd, ns, name, body, query, subresource=None, unconditional=False):
        """PUT.  Returns (object, http code)."""
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise errors.bad_request("Object 'metadata' is missing")
        new = copy.deepcopy(body)
        md = new["metadata"]
        if md.get("name") and md["name"] != name:
            raise errors.bad_request("the name of the object (%s) does not match the name on "
                                     "the URL (%s)" % (md["name"], name))
        md["name"] = name
        with self.store.cond:
            old = self.store.get(rd.key, ns, name)
            if old is None:
                if rd.create_on_update and not subresource:
                    if rd.namespaced:
                        md["namespace"] = ns
                    return self.create(rd, ns, new, query), 201
                raise errors.not_found(rd, name)
            rv = md.get("resourceVersion")
            if not rv and not unconditional:
                if not rd.unconditional_update:
                    raise errors.invalid(rd, name, [
                        ("metadata.resourceVersion", "FieldValueInvalid",
                         "Invalid value: 0x0: must be specified for an update")])
            elif rv and rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rd, name)
            md["resourceVersion"] = old["metadata"]["resourceVersion"]
            new["apiVersion"] = rd.api_version
            new["kind"] = rd.kind
            new = self._preserve_on_update(rd, new, old, subresource)
            self._validate(rd, new, query, old)
            new["apiVersion"] = rd.api_version
            omd = old["metadata"]
            if omd.get("deletionTimestamp"):
                added = [f for f in new["metadata"].get("finalizers") or []
                         if f not in (omd.get("finalizers") or [])]
                if added:
                    raise errors.invalid(rd, name, [(
                        "metadata.finalizers", "FieldValueForbidden",
                        "Forbidden: no new finalizers can be added if the object is being "
                        "deleted, found new finalizers %s" % _go_strings(added))])
            if rd.generation and "generation" in omd and \
                    _strip_for_generation(new, rd) != _strip_for_generation(old, rd):
                new["metadata"]["generation"] = omd["generation"] + 1
            if _canon(new) == _canon(old):
                return old, 200
            if _dry_run(query):
                return new, 200
            new["metadata"]["resourceVersion"] = str(self.store.next_rv())
            nmd = new["metadata"]
            if nmd.get("deletionTimestamp") and not nmd.get("finalizers") and \
                    not nmd.get("deletionGracePeriodSeconds"):
                self._remove(rd, new, old)
                return new, 200
            self.store.commit(rd.key, "MODIFIED", new, old)
        self._after_write(rd, new, old)
        return new, 200

    def patch(self, rd, ns, name, ctype, raw, query, subresource=None):
        ctype = (ctype or "").split(";")[0].strip().lower()
        accepted = [PATCH_JSON, PATCH_MERGE, PATCH_APPLY]
        if not rd.custom:
            accepted.append(PATCH_STRATEGIC)
        if ctype not in accepted:
            raise errors.unsupported_media_type(accepted)
        try:
            p = json.loads(raw or b"null")
        except ValueError as e:
            if ctype == PATCH_APPLY:
                raise errors.unsupported_media_type([PATCH_JSON, PATCH_MERGE]) from e
            raise errors.bad_request("error decoding patch: %s" % e) from e
        for _ in range(10):
            old = self.store.get(rd.key, ns, name)
            if old is None:
                if ctype == PATCH_APPLY and not subresource:
                    body = copy.deepcopy(p)
                    body.setdefault("metadata", {})["name"] = name
                    return self.create(rd, ns, body, query), 201
                raise errors.not_found(rd, name)
            try:
                if ctype == PATCH_JSON:
                    new = patchmod.json_patch(old, p)
                elif ctype == PATCH_STRATEGIC:
                    new = patchmod.strategic_merge_patch(old, p)
                else:
                    new = patchmod.merge_patch(old, p)
            except patchmod.PatchError as e:
                if e.code == 400:
                    raise errors.bad_request(str(e)) from e
                raise ApiError(422, "Invalid", "the server rejected our request due to an "
                               "error in our request", {"causes": [{"message": str(e)}]}) from e
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise errors.bad_request("patch produced an invalid object")
            prv = new["metadata"].get("resourceVersion")
            if prv and prv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rd, name)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            try:
                obj, _ = self.update(rd, ns, name, new, query, subresource, unconditional=True)
                return obj, 200
            except ApiError as e:
                # The object changed between our read and the write: retry, as the
                # real server does for patches.
                if e.reason == "Conflict" and not prv:
                    continue
                raise
        raise errors.conflict(rd, name)

    def delete(self, rd, ns, name, options, query):
        """DELETE.  Returns (body, http code)."""
        options = options or {}
        grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        grace = int(grace) if grace not in (None, "") else None
        pre = options.get("preconditions") or {}
        timer_for = None
        with self.store.cond:
            old = self.store.get(rd.key, ns, name)
            if old is None:
                raise errors.not_found(rd, name)
            omd = old["metadata"]
            if pre.get("uid") and pre["uid"] != omd.get("uid"):
                raise errors.conflict(rd, name, "Precondition failed: UID in precondition: %s, "
                                      "UID in object meta: %s" % (pre["uid"], omd.get("uid")))
            if pre.get("resourceVersion") and pre["resourceVersion"] != omd["resourceVersion"]:
                raise errors.conflict(rd, name, "Precondition failed: ResourceVersion in "
                                      "precondition: %s, ResourceVersion in object meta: %s"
                                      % (pre["resourceVersion"], omd["resourceVersion"]))
            if _dry_run(query):
                return self._deleted_answer(rd, old), 200
            if rd.graceful:
                if grace is None:
                    grace = int((old.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
                phase = (old.get("status") or {}).get("phase")
                if not (old.get("spec") or {}).get("nodeName") or phase in ("Failed",
                                                                            "Succeeded"):
                    grace = 0
            else:
                grace = 0
            cur_grace = omd.get("deletionGracePeriodSeconds")
            if omd.get("deletionTimestamp"):
                # Already being deleted: only a shorter grace period changes anything.
                if cur_grace is None or grace >= cur_grace:
                    return old, 200
            new = copy.deepcopy(old)
            nmd = new["metadata"]
            if grace > 0:
                when = datetime.datetime.now(datetime.timezone.utc) + \
                    datetime.timedelta(seconds=grace)
                nmd["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
                nmd["deletionGracePeriodSeconds"] = grace
                timer_for = (nmd.get("namespace"), nmd["name"], nmd["uid"])
            elif omd.get("finalizers"):
                nmd.setdefault("deletionTimestamp", now_time())
                nmd["deletionGracePeriodSeconds"] = 0
            else:
                nmd["resourceVersion"] = str(self.store.next_rv())
                self._remove(rd, new, old)
                return self._deleted_answer(rd, new), 200
            if rd.generation and "generation" in nmd and not omd.get("deletionTimestamp"):
                nmd["generation"] += 1
            nmd["resourceVersion"] = str(self.store.next_rv())
            self.store.commit(rd.key, "MODIFIED", new, old)
        if timer_for:
            self._kubelet_finish_later(rd, *timer_for)
        return new, 200

    def _deleted_answer(self, rd, obj):
        if rd.return_deleted:
            return obj
        md = obj["metadata"]
        details = {"name": md["name"], "kind": rd.plural, "uid": md.get("uid")}
        if rd.group:
            details = {"name": md["name"], "group": rd.group, "kind": rd.plural,
                       "uid": md.get("uid")}
        return errors.status_body(200, None, None, details, success=True)

    def _remove(self, rd, obj, old):
        """Commit the deletion of obj (its RV already set); caller holds the lock."""
        self.store.commit(rd.key, "DELETED", obj, old)
        if rd.key == "apiextensions.k8s.io/customresourcedefinitions":
            self._drop_crd(obj)
        elif rd.plural == "namespaces":
            self._drop_namespace(obj["metadata"]["name"])

    def _drop_crd(self, crd):
        spec = crd.get("spec") or {}
        key = "%s/%s" % (spec.get("group"), (spec.get("names") or {}).get("plural"))
        for obj in list(self.store.objects.get(key, {}).values()):
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = str(self.store.next_rv())
            self.store.commit(key, "DELETED", gone, obj)
        self.registry.remove(key)

    def _drop_namespace(self, ns):
        for rd in self.registry.all():
            if not rd.namespaced:
                continue
            for (ons, _), obj in list(self.store.objects.get(rd.key, {}).items()):
                if ons == ns:
                    gone = copy.deepcopy(obj)
                    gone["metadata"]["resourceVersion"] = str(self.store.next_rv())
                    self.store.commit(rd.key, "DELETED", gone, obj)

    def _after_write(self, rd, new, old):
        if rd.key == "apiextensions.k8s.io/customresourcedefinitions":
            self.registry.add_crd(new)

    # ------------------------------------------------------ simulated kubelet

    def _kubelet_finish_later(self, rd, ns, name, uid):
        delay = self.settings.pod_deletion_delay
        if delay < 0:
            return

        def finish():
            with self._timers_lock:
                self._timers.discard(t)
            self.finish_pod_deletion(rd, ns, name, uid)
        t = threading.Timer(delay, finish)
        t.daemon = True
        with self._timers_lock:
            self._timers.add(t)
        t.start()

    def finish_pod_deletion(self, rd, ns, name, uid):
        """What the kubelet does once containers are gone: delete with grace 0."""
        with self.store.cond:
            old = self.store.get(rd.key, ns, name)
            if old is None or old["metadata"].get("uid") != uid or \
                    not old["metadata"].get("deletionTimestamp"):
                return
            new = copy.deepcopy(old)
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["resourceVersion"] = str(self.store.next_rv())
            if new["metadata"].get("finalizers"):
                self.store.commit(rd.key, "MODIFIED", new, old)
            else:
                self._remove(rd, new, old)

    def cancel_timers(self):
        with self._timers_lock:
            for t in self._timers:
                t.cancel()
            self._timers.clear()

    # --------------------------------------------------------------- eviction

    def _pdb_matches(self, pdb, pod):
        sel = (pdb.get("spec") or {}).get("selector")
        if sel is None:
            return False
        labels = pod["metadata"].get("labels") or {}
        for k, v in (sel.get("matchLabels") or {}).items():
            if labels.get(k) != v:
                return False
        for e in sel.get("matchExpressions") or []:
            k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
            if op == "In" and labels.get(k) not in vals:
                return False
            if op == "NotIn" and k in labels and labels[k] in vals:
                return False
            if op == "Exists" and k not in labels:
                return False
            if op == "DoesNotExist" and k in labels:
                return False
        return True

    @staticmethod
    def _pod_healthy(pod):
        if pod["metadata"].get("deletionTimestamp"):
            return False
        st = pod.get("status") or {}
        if st.get("phase") != "Running":
            return False
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in st.get("conditions") or [])

    def _pdb_status(self, pdb):
        """What the disruption controller would compute for pdb right now."""
        ns = pdb["metadata"].get("namespace") or "default"
        pods, _ = self.store.list("/pods", ns)
        pods = [p for p in pods if self._pdb_matches(pdb, p)]
        old = pdb.get("status") or {}
        disrupted = dict(old.get("disruptedPods") or {})
        healthy = sum(1 for p in pods if self._pod_healthy(p)
                      and p["metadata"]["name"] not in disrupted)
        expected = len(pods)
        spec = pdb.get("spec") or {}

        def scaled(v):
            if isinstance(v, str) and v.endswith("%"):
                return -(-int(v[:-1]) * expected // 100)
            return int(v)
        if spec.get("maxUnavailable") is not None:
            desired = max(0, expected - scaled(spec["maxUnavailable"]))
        elif spec.get("minAvailable") is not None:
            desired = scaled(spec["minAvailable"])
        else:
            desired = expected
        st = {"observedGeneration": pdb["metadata"].get("generation", 1),
              "disruptionsAllowed": max(0, healthy - desired), "currentHealthy": healthy,
              "desiredHealthy": desired, "expectedPods": expected,
              "conditions": [{"type": "DisruptionAllowed",
                              "status": "True" if healthy > desired else "False",
                              "reason": "SufficientPods" if healthy > desired
                              else "InsufficientPods", "message": "",
                              "observedGeneration": pdb["metadata"].get("generation", 1),
                              "lastTransitionTime": now_time()}]}
        if disrupted:
            st["disruptedPods"] = disrupted
        return st

    def evict(self, ns, name, body, query):
        pods_rd = self.registry.by_storage_key("/pods")
        if isinstance(body, dict):
            bname = (body.get("metadata") or {}).get("name")
            if bname and bname != name:
                raise errors.bad_request("name in URL does not match name in Eviction object")
        pod = self.store.get("/pods", ns, name)
        if pod is None:
            raise errors.not_found(pods_rd, name)
        options = (body or {}).get("deleteOptions") or {}
        phase = (pod.get("status") or {}).get("phase")
        if pod["metadata"].get("deletionTimestamp") or phase in ("Succeeded", "Failed",
                                                                 "Pending"):
            self._evict_delete(pods_rd, ns, name, options, query)
            return
        pdb_rd = self.registry.by_storage_key("policy/poddisruptionbudgets")
        pdbs, _ = self.store.list(pdb_rd.key, ns)
        pdbs = [p for p in pdbs if self._pdb_matches(p, pod)]
        if len(pdbs) > 1:
            raise ApiError(500, "InternalError", "This pod has more than one "
                           "PodDisruptionBudget, which the eviction subresource does not "
                           "support.")
        if pdbs:
            pdb = pdbs[0]
            st = self._pdb_status(pdb)
            if not self._pod_healthy(pod):
                allowed = st["currentHealthy"] >= st["desiredHealthy"] and st["desiredHealthy"] > 0
                if not allowed and st["disruptionsAllowed"] <= 0:
                    raise self._pdb_refusal(pdb, st)
            else:
                if st["disruptionsAllowed"] <= 0:
                    raise self._pdb_refusal(pdb, st)
                st["disruptionsAllowed"] -= 1
                st.setdefault("disruptedPods", {})[name] = now_time()
                new = copy.deepcopy(pdb)
                new["status"] = st
                if not _dry_run(query):
                    with self.store.cond:
                        cur = self.store.get(pdb_rd.key, ns, pdb["metadata"]["name"])
                        if cur is None or cur["metadata"]["resourceVersion"] != \
                                pdb["metadata"]["resourceVersion"]:
                            raise errors.conflict(pdb_rd, pdb["metadata"]["name"])
                        new["metadata"]["resourceVersion"] = str(self.store.next_rv())
                        self.store.commit(pdb_rd.key, "MODIFIED", new, pdb)
        self._evict_delete(pods_rd, ns, name, options, query)

    def _evict_delete(self, rd, ns, name, options, query):
        try:
            self.delete(rd, ns, name, options, query)
        except ApiError as e:
            if e.code != 404:
                raise

    @staticmethod
    def _pdb_refusal(pdb, st):
        return errors.too_many_requests(
            "Cannot evict pod as it would violate the pod's disruption budget.", 0,
            [{"reason": "DisruptionBudget",
              "message": "The disruption budget %s needs %d healthy pods and has %d currently"
                         % (pdb["metadata"]["name"], st["desiredHealthy"],
                            st["currentHealthy"])}])


def _dry_run(query):
    return bool(query.get("dryRun"))


def _canon(obj):
    return json.dumps(obj, sort_keys=True)


def _go_strings(items):
    return "[]string{%s}" % ", ".join('"%s"' % i for i in items)
