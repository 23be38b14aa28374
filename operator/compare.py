"""Does an existing object already say what the operator wants? Compared on the fields the operator sets only, because
the apiserver adds defaults (imagePullPolicy, terminationMessagePath, clusterIP, ...) and canonicalises quantities
("1000m" comes back as "1"). Combined with the desired-hash annotation (which notices a field the operator stopped
setting), this is how the applier writes only what differs and never fights the apiserver's defaults.
"""
import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {"": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10 ** 3, "M": 10 ** 6,
           "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30,
           "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}


def quantity(value):
    """A Kubernetes quantity as a Decimal, or None when `value` is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value.strip())
    if not match:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * Decimal(_SUFFIX[suffix])
    except (InvalidOperation, KeyError):
        return None


def _empty(value):
    return value is None or value == "" or value == [] or value == {} or value is False or value == 0


def contains(actual, desired, path=()):
    """True when every field of `desired` is present with the same value in `actual` (lists element-wise and of
    equal length; quantities compared by value under `resources`/`sizeLimit`; a zero value the apiserver omits
    counts as present)."""
    if isinstance(desired, dict):
        if actual is None:
            return all(_empty(v) for v in desired.values())
        if not isinstance(actual, dict):
            return False
        return all(contains(actual.get(k), v, (*path, k)) for k, v in desired.items())
    if isinstance(desired, list):
        actual = actual or []
        if not isinstance(actual, list) or len(actual) != len(desired):
            return False
        return all(contains(a, d, path) for a, d in zip(actual, desired, strict=True))
    if actual is None:
        return _empty(desired)
    if actual == desired:
        return True
    if "resources" in path or "sizeLimit" in path:
        a, d = quantity(actual), quantity(desired)
        return a is not None and a == d
    return False


def differences(actual, desired, path=""):
    """Field paths where `actual` does not contain `desired` (for logs and tests)."""
    if contains(actual, desired, tuple(p for p in path.split(".") if p)):
        return []
    if isinstance(desired, dict) and isinstance(actual, dict):
        out = []
        for k, v in desired.items():
            out += differences(actual.get(k), v, f"{path}.{k}" if path else k)
        return out or [path]
    return [path or "."]
