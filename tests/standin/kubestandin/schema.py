"""Structural-schema handling for custom resources (apiextensions-apiserver):
defaulting, pruning of unknown fields, and validation of type, required,
enum, minimum/maximum, with the field paths and wording of the real server.

Only the parts of OpenAPI v3 that CRDs commonly use are handled; unknown
keywords are ignored (the object is then accepted, never rejected).
"""

import copy
import json

_GO_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _type_ok(value, typ):
    if typ == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
    if typ == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    py = _GO_TYPES.get(typ)
    return py is None or isinstance(value, py)


def _fmt(value):
    return json.dumps(value, separators=(",", ":"))


class Result:
    def __init__(self):
        self.causes = []        # (field, causeType, message)
        self.unknown = []       # pruned field paths


def _join(path, key):
    return "%s.%s" % (path, key) if path else key


def apply(obj, schema, strict_unknown=False):
    """Default, prune and validate obj (a full custom resource) in place.

    Returns a Result; causes are validation errors (422), unknown lists the
    pruned fields (an error only when the client asked for strict decoding).
    """
    res = Result()
    if not schema:
        return res
    props = schema.get("properties") or {}
    for key in list(obj):
        if key in ("apiVersion", "kind", "metadata"):
            continue
        if key in props:
            obj[key] = _walk(obj[key], props[key], key, res)
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            res.unknown.append(key)
            del obj[key]
    for key, sub in props.items():
        if key not in obj and "default" in sub and key not in ("metadata",):
            obj[key] = _walk(copy.deepcopy(sub["default"]), sub, key, res)
    for key in schema.get("required") or []:
        if key not in obj:
            res.causes.append((key, "FieldValueRequired", "Required value"))
    return res


def _walk(value, schema, path, res):
    if value is None:
        if schema.get("nullable"):
            return None
        if "default" in schema:
            return _walk(copy.deepcopy(schema["default"]), schema, path, res)
        typ = schema.get("type")
        if typ and not schema.get("x-kubernetes-preserve-unknown-fields"):
            res.causes.append((path, "FieldValueTypeInvalid",
                               'Invalid value: "null": %s in body must be of type %s: "null"'
                               % (path, typ)))
        return value
    typ = schema.get("type")
    if typ and not _type_ok(value, typ):
        res.causes.append((path, "FieldValueTypeInvalid",
                           'Invalid value: "%s": %s in body must be of type %s: "%s"'
                           % (_go_type(value), path, typ, _go_type(value))))
        return value
    if typ == "integer" and isinstance(value, float):
        value = int(value)
    if "enum" in schema and value not in schema["enum"]:
        res.causes.append((path, "FieldValueNotSupported",
                           "Unsupported value: %s: supported values: %s"
                           % (_fmt(value), ", ".join(_fmt(e) for e in schema["enum"]))))
    if typ in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            res.causes.append((path, "FieldValueInvalid",
                               "Invalid value: %s: %s in body should be greater than or equal "
                               "to %s" % (_fmt(value), path, _fmt(schema["minimum"]))))
        if "maximum" in schema and value > schema["maximum"]:
            res.causes.append((path, "FieldValueInvalid",
                               "Invalid value: %s: %s in body should be less than or equal "
                               "to %s" % (_fmt(value), path, _fmt(schema["maximum"]))))
    if isinstance(value, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        if props is not None or isinstance(addl, dict) or not preserve:
            for key in list(value):
                sub = (props or {}).get(key)
                if sub is None and isinstance(addl, dict):
                    sub = addl
                if sub is not None:
                    value[key] = _walk(value[key], sub, _join(path, key), res)
                elif not preserve and not schema.get("x-kubernetes-embedded-resource"):
                    if props is not None or addl is None:
                        res.unknown.append(_join(path, key))
                        del value[key]
        for key, sub in (props or {}).items():
            if key not in value and "default" in sub:
                value[key] = _walk(copy.deepcopy(sub["default"]), sub, _join(path, key), res)
        for key in schema.get("required") or []:
            if key not in value:
                res.causes.append((_join(path, key), "FieldValueRequired", "Required value"))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            value[i] = _walk(item, schema["items"], "%s[%d]" % (path, i), res)
    return value


def _go_type(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
