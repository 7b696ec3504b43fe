"""A reader for the block-style YAML subset used by the project's manifests.

The standard library has no YAML parser, and the server only needs to read its
own CRD manifests (conf/crds/*.yaml) at start.  Supported: block mappings and
sequences, "- key: value" items, comments, "---" document separators, plain,
single- and double-quoted scalars, and the flow forms {} [] [a, b] {a: b}.
Scalars are resolved like YAML 1.2 core: null, true/false, ints, floats.
Anything else raises YamlError with the line number.  The test suite compares
the result with kubectl's own reading of the same files.
"""

import json
import re


class YamlError(ValueError):
    pass


_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


def _scalar(text, lineno):
    t = text.strip()
    if t == "" or t in ("~", "null", "Null", "NULL"):
        return None
    if t in ("true", "True", "TRUE"):
        return True
    if t in ("false", "False", "FALSE"):
        return False
    if t.startswith('"'):
        if not t.endswith('"') or len(t) < 2:
            raise YamlError("line %d: unterminated double-quoted scalar" % lineno)
        return json.loads(t)
    if t.startswith("'"):
        if not t.endswith("'") or len(t) < 2:
            raise YamlError("line %d: unterminated single-quoted scalar" % lineno)
        return t[1:-1].replace("''", "'")
    if t.startswith("[") or t.startswith("{"):
        return _flow(t, lineno)
    if t[0] in "&*!|>%@`":
        raise YamlError("line %d: unsupported YAML construct %r" % (lineno, t))
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t) and any(c.isdigit() for c in t):
        return float(t)
    return t


def _split_flow(body, lineno):
    items, depth, cur, quote = [], 0, "", None
    for ch in body:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        cur += ch
    if quote or depth:
        raise YamlError("line %d: unbalanced flow collection" % lineno)
    if cur.strip():
        items.append(cur)
    return [i.strip() for i in items]


def _flow(t, lineno):
    if t.startswith("["):
        if not t.endswith("]"):
            raise YamlError("line %d: unterminated flow sequence" % lineno)
        return [_scalar(i, lineno) for i in _split_flow(t[1:-1], lineno)]
    if not t.endswith("}"):
        raise YamlError("line %d: unterminated flow mapping" % lineno)
    out = {}
    for item in _split_flow(t[1:-1], lineno):
        key, sep, val = _split_key(item)
        if not sep:
            raise YamlError("line %d: flow mapping item without ':'" % lineno)
        out[_scalar(key, lineno)] = _scalar(val, lineno)
    return out


def _strip_comment(line):
    """Remove a trailing '# comment' that is not inside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            if i == 0 or line[i - 1] in " \t:-[{,":
                quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _split_key(text):
    """Split 'key: value' at the first ': ' (or trailing ':') outside quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'" and i == 0:
            quote = ch
        elif ch == ":" and (i + 1 == len(text) or text[i + 1] in " \t"):
            return text[:i].strip(), True, text[i + 1:].strip()
    return text, False, ""


class _Lines:
    def __init__(self, lines):
        self.lines = lines  # list of (lineno, indent, text)
        self.pos = 0

    def peek(self):
        return self.lines[self.pos] if self.pos < len(self.lines) else None

    def next(self):
        line = self.lines[self.pos]
        self.pos += 1
        return line


def _parse_block(lines, indent):
    first = lines.peek()
    if first is None or first[1] < indent:
        return None
    if first[2] == "-" or first[2].startswith("- "):
        return _parse_seq(lines, first[1])
    return _parse_map(lines, first[1])


def _parse_value(lines, rest, parent_indent, lineno, seq_item=False):
    """Value after 'key:' — inline scalar or a nested block."""
    if rest != "":
        return _scalar(rest, lineno)
    nxt = lines.peek()
    if nxt is None:
        return None
    # A sequence may sit at the same indent as its parent key.
    if nxt[1] > parent_indent or (nxt[1] == parent_indent and not seq_item
                                  and (nxt[2] == "-" or nxt[2].startswith("- "))):
        return _parse_block(lines, nxt[1])
    return None


def _parse_map(lines, indent):
    out = {}
    while True:
        line = lines.peek()
        if line is None or line[1] < indent:
            return out
        lineno, ind, text = line
        if ind > indent:
            raise YamlError("line %d: unexpected indentation" % lineno)
        if text == "-" or text.startswith("- "):
            return out
        lines.next()
        key, sep, rest = _split_key(text)
        if not sep:
            raise YamlError("line %d: expected 'key: value'" % lineno)
        key = _scalar(key, lineno)
        if key in out:
            raise YamlError("line %d: duplicate key %r" % (lineno, key))
        out[key] = _parse_value(lines, rest, indent, lineno)


def _parse_seq(lines, indent):
    out = []
    while True:
        line = lines.peek()
        if line is None or line[1] != indent or not (line[2] == "-" or line[2].startswith("- ")):
            if line is not None and line[1] > indent:
                raise YamlError("line %d: unexpected indentation" % line[0])
            return out
        lineno, ind, text = lines.next()
        body = text[1:].lstrip()
        if body == "":
            out.append(_parse_value(lines, "", indent, lineno, seq_item=True))
            continue
        key, sep, rest = _split_key(body)
        if sep and body[0] not in "[{":
            # "- key: value" starts a mapping whose keys sit at the column after "- ".
            item_indent = ind + (len(text) - len(body))
            lines.lines[lines.pos - 1] = (lineno, item_indent, body)
            lines.pos -= 1
            out.append(_parse_map(lines, item_indent))
        else:
            out.append(_scalar(body, lineno))


def load_all(text):
    """Parse every document of a YAML stream; empty documents are skipped."""
    docs, cur = [], []
    for lineno, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlError("line %d: tab in indentation" % lineno)
        if raw.rstrip() in ("---", "..."):
            docs.append(cur)
            cur = []
            continue
        if raw.startswith("%"):
            raise YamlError("line %d: directives are not supported" % lineno)
        line = _strip_comment(raw)
        if not line.strip():
            continue
        cur.append((lineno, len(line) - len(line.lstrip()), line.strip()))
    docs.append(cur)
    out = []
    for doc in docs:
        if not doc:
            continue
        lines = _Lines(doc)
        value = _parse_block(lines, 0) if doc[0][1] == 0 else None
        if value is None and len(doc) == 1:
            value = _scalar(doc[0][2], doc[0][0])
            lines.pos = 1
        if lines.peek() is not None:
            raise YamlError("line %d: trailing content" % lines.peek()[0])
        out.append(value)
    return out


def load(text):
    docs = load_all(text)
    if len(docs) != 1:
        raise YamlError("expected one document, found %d" % len(docs))
    return docs[0]
