"""The simple JSONPath that CRD printer columns and selectable fields use:
.a.b, .a['key.with.dots'], .a[0], .a[*] (the first match is used)."""

import re

_TOKEN = re.compile(r"\.([A-Za-z0-9_$-]+)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[(\d+|\*)\]")


class JsonPathError(ValueError):
    pass


def parse(path):
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    tokens, pos = [], 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            raise JsonPathError("unsupported JSONPath %r" % path)
        if m.group(4) is not None:
            tokens.append("*" if m.group(4) == "*" else int(m.group(4)))
        else:
            tokens.append(next(g for g in m.groups()[:3] if g is not None))
        pos = m.end()
    return tokens


def find(obj, path):
    """All values at path (a list, empty when nothing matches)."""
    cur = [obj]
    for t in parse(path):
        nxt = []
        for c in cur:
            if t == "*":
                if isinstance(c, list):
                    nxt.extend(c)
                elif isinstance(c, dict):
                    nxt.extend(c.values())
            elif isinstance(t, int):
                if isinstance(c, list) and t < len(c):
                    nxt.append(c[t])
            elif isinstance(c, dict) and t in c:
                nxt.append(c[t])
        cur = nxt
    return cur


def first(obj, path):
    values = find(obj, path)
    return values[0] if values else None
