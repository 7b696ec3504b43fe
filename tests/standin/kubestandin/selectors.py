"""Label and field selectors (apimachinery pkg/labels and pkg/fields).

Label selector terms, ANDed with ',':  k=v  k==v  k!=v  k in (a,b)  k notin (a,b)  k  !k
'!=' and 'notin' also match objects without the key.
Field selector terms:  f=v  f==v  f!=v; values may escape ',', '=' and '\\' with '\\'.
"""

import re

from .errors import bad_request

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class LabelSelector:
    def __init__(self, terms):
        self.terms = terms  # list of (op, key, values)

    def empty(self):
        return not self.terms

    def matches(self, labels):
        labels = labels or {}
        for op, key, values in self.terms:
            has = key in labels
            val = labels.get(key)
            if op == "in" and not (has and val in values):
                return False
            if op == "notin" and has and val in values:
                return False
            if op == "exists" and not has:
                return False
            if op == "!exists" and has:
                return False
        return True


def _split_terms(text):
    """Split on commas that are not inside parentheses."""
    terms, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return [t.strip() for t in terms]


def _check_key(key, text):
    if not _KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise bad_request("unable to parse requirement: invalid label key \"%s\": in "
                          "selector \"%s\"" % (key, text))


def parse_label_selector(text):
    text = (text or "").strip()
    if not text:
        return LabelSelector([])
    terms = []
    for term in _split_terms(text):
        if not term:
            raise bad_request("found '', expected: identifier, error: unable to parse "
                              "requirement in selector \"%s\"" % text)
        m = re.match(r"^(\S+?)\s+(notin|in)\s*\((.*)\)$", term)
        if m:
            key, op, vals = m.group(1), m.group(2), m.group(3)
            _check_key(key, text)
            values = {v.strip() for v in vals.split(",") if v.strip()} if vals.strip() else set()
            terms.append((op, key, values))
            continue
        m = re.match(r"^([^=!\s]+)\s*(==|!=|=)\s*(\S*)$", term)
        if m:
            key, op, val = m.group(1), m.group(2), m.group(3)
            _check_key(key, text)
            terms.append(("notin" if op == "!=" else "in", key, {val}))
            continue
        if term.startswith("!"):
            key = term[1:].strip()
            _check_key(key, text)
            terms.append(("!exists", key, None))
            continue
        if " " in term:
            raise bad_request("unable to parse requirement: found '%s', expected: "
                              "in, notin, =, ==, !=, gt, lt" % term.split()[1])
        _check_key(term, text)
        terms.append(("exists", term, None))
    return LabelSelector(terms)


class FieldSelector:
    def __init__(self, terms):
        self.terms = terms  # list of (field, op, value); op is '=' or '!='

    def empty(self):
        return not self.terms

    def fields(self):
        return [t[0] for t in self.terms]

    def exact(self, field):
        """The value a selector requires for field, or None."""
        for f, op, v in self.terms:
            if f == field and op == "=":
                return v
        return None

    def matches(self, fieldset):
        for f, op, v in self.terms:
            have = fieldset.get(f, "")
            if op == "=" and have != v:
                return False
            if op == "!=" and have == v:
                return False
        return True


def _split_escaped(text, sep):
    parts, cur, esc = [], "", False
    for ch in text:
        if esc:
            cur += "\\" + ch
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == sep:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _unescape(v):
    return re.sub(r"\\(.)", r"\1", v)


def parse_field_selector(text, allowed):
    """allowed: the selectable field names of the resource (400 for others)."""
    text = (text or "").strip()
    if not text:
        return FieldSelector([])
    terms = []
    for term in _split_escaped(text, ","):
        m = re.match(r"^((?:[^=!\\]|\\.)+?)\s*(==|!=|=)(.*)$", term)
        if not m:
            raise bad_request("invalid selector: '%s'; can't understand '%s'" % (text, term))
        field, op, val = m.group(1).strip(), m.group(2), _unescape(m.group(3))
        if op == "==":
            op = "="
        if field not in allowed:
            raise bad_request('field label not supported: %s' % field)
        terms.append((field, op, val))
    return FieldSelector(terms)
