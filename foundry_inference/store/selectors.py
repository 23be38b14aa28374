"""Kubernetes label selector strings (`a=b,c!=d,e in (x,y),!f`), parsed once and matched in Python.

The embedded store needs them; the Kubernetes store sends the same string to the apiserver. Both reject the same
malformed selectors with Invalid.
"""
import re

from .errors import Invalid

_KEY = r"(?:[a-z0-9A-Z.-]{1,253}/)?[a-zA-Z0-9](?:[-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?"
_VALUE = r"(?:[a-zA-Z0-9](?:[-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?)?"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQ = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")


def _split(selector):
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _bad(selector, why):
    return Invalid(f"invalid label selector {selector!r}: {why}",
                   [{"field": "labelSelector", "reason": "FieldValueInvalid", "message": why}])


def parse(selector):
    """Return a list of (key, op, values) requirements; op in {"=", "!=", "in", "notin", "exists", "!exists"}."""
    if selector is None or not selector.strip():
        return []
    if len(selector) > 4096:
        raise _bad(selector[:64] + "...", "selector too long")
    reqs = []
    for part in _split(selector):
        if m := _SET.match(part):
            values = [v.strip() for v in m.group(3).split(",") if v.strip()]
            if not values or not all(_VALUE_RE.match(v) for v in values):
                raise _bad(selector, f"bad value set in {part.strip()!r}")
            reqs.append((m.group(1), m.group(2), frozenset(values)))
        elif m := _EQ.match(part):
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append((m.group(1), op, frozenset([m.group(3)])))
        elif m := _EXISTS.match(part):
            reqs.append((m.group(2), "!exists" if m.group(1) else "exists", frozenset()))
        else:
            raise _bad(selector, f"cannot parse {part.strip()!r}")
    return reqs


def matches(requirements, labels):
    labels = labels or {}
    for key, op, values in requirements:
        present = key in labels
        if op == "=" and labels.get(key) not in values:
            return False
        if op == "in" and (not present or labels[key] not in values):
            return False
        if op in ("!=", "notin") and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
    return True
