"""One small validator for every JSON document the project reads (manifest, engine.json, profile,
board file, state file, checkpoint sidecar): each reader states its fields once and gets one-line errors
that name the file, the field, what was expected and what to do. Python 3.6+, standard library only.

    doc = require_dict(raw, where, fix)
    name = field(doc, "name", str, where, fix)
    sizes = field(doc, "batch_sizes", [int], where, fix, check=lambda v: v and min(v) >= 1,
                  expect="a non-empty list of positive integers")
"""
import json
import numbers

from runtime.errors import RuntimeUserError

_MISSING = object()


def _type_name(t):
    if isinstance(t, list):
        return "a list of %s" % _type_name(t[0])
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "an object",
            list: "a list", type(None): "null"}.get(t, getattr(t, "__name__", str(t)))


def _is(value, t):
    if isinstance(t, tuple):
        return any(_is(value, x) for x in t)
    if isinstance(t, list):
        return isinstance(value, list) and all(_is(v, t[0]) for v in value)
    if t is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return isinstance(value, t)


def fail(where, path, expect, got, fix, error=RuntimeUserError):
    raise error("%s: %s must be %s, got %s; %s" % (where, path, expect, _short(got), fix))


def _short(v):
    s = repr(v) if v is not _MISSING else "nothing (missing)"
    return s if len(s) <= 60 else s[:57] + "..."


def require_dict(doc, where, fix, path="the document", error=RuntimeUserError):
    if not isinstance(doc, dict):
        fail(where, path, "a JSON object", doc, fix, error)
    return doc


def field(doc, key, t, where, fix, default=_MISSING, check=None, expect=None, prefix="", error=RuntimeUserError):
    """doc[key] checked against type t (str, int, float, bool, dict, list, [elem], or a tuple of these).

    default: returned when the key is absent (absent + no default = error). check: extra predicate;
    expect: how the expected value is described in the message."""
    path = prefix + key
    value = doc.get(key, _MISSING) if isinstance(doc, dict) else _MISSING
    if value is _MISSING:
        if default is not _MISSING:
            return default
        fail(where, path, expect or _type_name(t), value, fix, error)
    if not _is(value, t) or (check is not None and not _safe(check, value)):
        fail(where, path, expect or _type_name(t), value, fix, error)
    return value


def _safe(check, value):
    try:
        return bool(check(value))
    except Exception:  # noqa: BLE001 - a predicate that cannot judge the value rejects it
        return False


def load_json(path, fix, error=RuntimeUserError):
    """The JSON document in `path`; unreadable, undecodable or invalid JSON is one line ending in `fix`.
    The one JSON reader of the project (manifest, engine record, profile, board, state, sidecar, targets)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise error("%s cannot be read (%s); %s" % (path, exc.strerror or exc, fix))
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise error("%s is not valid JSON (%s); %s" % (path, " ".join(str(exc).split()) or type(exc).__name__, fix))
