"""PATCH semantics: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the
subset of strategic merge patch that built-in kinds need.

Every function takes the current object and returns a new one; the input is
never modified.  Errors raise PatchError, which the caller maps to the HTTP
status the real API server answers (400 for undecodable patches, 422 for JSON
patch operations that cannot be applied).
"""

import copy


class PatchError(Exception):
    def __init__(self, message, code=422):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- merge patch

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ----------------------------------------------------------------- JSON patch

def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError("JSON pointer must start with '/': %r" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container, token, allow_end=False):
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError("invalid array index %r" % token)
    i = int(token)
    if i > len(container) or (i == len(container) and not allow_end):
        raise PatchError("array index out of bounds: %d" % i)
    return i


def _walk(doc, tokens):
    cur = doc
    for t in tokens:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError("doc is missing path: /%s" % "/".join(tokens))
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t)]
        else:
            raise PatchError("doc is missing path: /%s" % "/".join(tokens))
    return cur


def _get(doc, path):
    return _walk(doc, _pointer(path))


def _add(doc, path, value):
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError("doc is missing path: %s" % path)
    return doc


def _remove(doc, path):
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("Unable to remove nonexistent key: %s: missing value" % last)
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last))
    raise PatchError("doc is missing path: %s" % path)


def json_patch(target, ops):
    if not isinstance(ops, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch",
                         400)
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError("Unexpected kind: unknown")
        kind = op["op"]
        path = op.get("path")
        if path is None:
            raise PatchError("missing path in %s operation" % kind)
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            tokens = _pointer(path)
            if not tokens:
                doc = copy.deepcopy(op.get("value"))
            else:
                parent = _walk(doc, tokens[:-1])
                if isinstance(parent, list):
                    parent[_index(parent, tokens[-1])] = copy.deepcopy(op.get("value"))
                else:
                    parent[tokens[-1]] = copy.deepcopy(op.get("value"))
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            try:
                have = _get(doc, path)
            except PatchError:
                have = None
            if have != op.get("value") or type(have) is bool and type(op.get("value")) is not bool:
                raise PatchError("testing value %s failed: test failed" % path)
        else:
            raise PatchError("Unexpected kind: %s" % kind)
    return doc


# ----------------------------------------------------- strategic merge patch
#
# Patch strategies of the built-in types, keyed by field name (the same name
# means the same strategy in every built-in kind we serve).  A string is the
# merge key of a list of objects; PRIMITIVE marks a list of scalars merged as a
# set; lists not named here are replaced whole (atomic), like taints.

PRIMITIVE = object()
MERGE_KEYS = {
    "finalizers": PRIMITIVE,
    "ownerReferences": "uid",
    "conditions": "type",
    "addresses": "type",
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ports": "containerPort",
    "readinessGates": "conditionType",
    "hostAliases": "ip",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "podIPs": "ip",
    "images": None,
    "volumesAttached": "name",
}


def strategic_merge_patch(target, patch):
    if not isinstance(patch, dict):
        raise PatchError("unable to find api field in struct for the patch", 400)
    return _smp_map(copy.deepcopy(target) if isinstance(target, dict) else {}, patch)


def _smp_map(out, patch):
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(out.get(field), list):
                out[field] = [x for x in out[field] if x not in value]
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(out.get(key) if isinstance(out.get(key), dict) else {}, value)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _smp_list(key, out[key], value)
        elif isinstance(value, list):
            out[key] = _smp_list(key, [], value)
        else:
            out[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        for key in list(out):
            if key not in retain:
                del out[key]
    for key, order in patch.items():
        if key.startswith("$setElementOrder/") and isinstance(out.get(key.split("/", 1)[1]), list):
            _apply_order(out, key.split("/", 1)[1], order)
    return out


def _apply_order(out, field, order):
    mk = MERGE_KEYS.get(field)
    items = out[field]

    def ident(x):
        return x.get(mk) if isinstance(mk, str) and isinstance(x, dict) else x
    wanted = [ident(o) if isinstance(o, dict) else o for o in order]
    ordered = [x for w in wanted for x in items if ident(x) == w]
    rest = [x for x in items if ident(x) not in wanted]
    out[field] = ordered + rest


def _smp_list(field, current, patch):
    mk = MERGE_KEYS.get(field)
    if mk is None:
        return [x for x in copy.deepcopy(patch)
                if not (isinstance(x, dict) and x.get("$patch") == "replace" and len(x) == 1)]
    if mk is PRIMITIVE:
        out = list(current)
        for x in patch:
            if x not in out:
                out.append(x)
        return out
    for item in patch:
        if isinstance(item, dict) and item.get("$patch") == "replace" and len(item) == 1:
            return [x for x in copy.deepcopy(patch) if x is not item]
    out = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or mk not in item:
            raise PatchError("map: %s does not contain declared merge key: %s" % (item, mk))
        idx = next((i for i, x in enumerate(out)
                    if isinstance(x, dict) and x.get(mk) == item[mk]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append({k: v for k, v in copy.deepcopy(item).items() if v is not None})
        else:
            merged = _smp_map(out[idx], item)
            out[idx] = merged
    return out
