"""The path spec: one group's network as a JSON list of blocks (docs/architectures.md is the contract).

load_spec() reads a built-in name or a .json file and returns it normalised (every default filled in),
so the model builder, the cost table and the checkpoint sidecar all see the same explicit blocks.
Geometry (does the image survive every stride?) depends on the input size and is checked by
compile.arch.cost.layer_table, which every model build goes through.
"""
import os

from compile.errors import UserError
from runtime.schema import field, load_json, require_dict

BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtins")
ACTIVATIONS = ("relu", "relu6", "hardswish", "none")
FIX = "fix the spec (block types and fields: docs/architectures.md)"

_pos = dict(check=lambda v: v >= 1, expect="an integer >= 1")
_act = dict(check=lambda v: v in ACTIVATIONS, expect="one of " + ", ".join(ACTIVATIONS))

# type -> [(field, type, default or REQUIRED, check kwargs)]; padding's default depends on the kernel.
REQUIRED = object()
BLOCKS = {
    "conv": [("channels", int, REQUIRED, _pos), ("kernel", int, 3, _pos), ("stride", int, 1, _pos),
             ("padding", int, None, dict(check=lambda v: v >= 0, expect="an integer >= 0")),
             ("act", str, "relu", _act)],
    "dwsep": [("channels", int, REQUIRED, _pos), ("kernel", int, 3, _pos), ("stride", int, 1, _pos),
              ("act", str, "relu", _act)],
    "residual": [("channels", int, REQUIRED, _pos), ("stride", int, 1, _pos), ("act", str, "relu", _act)],
    "maxpool": [("kernel", int, 2, _pos), ("stride", int, None, _pos)],
    "avgpool": [("kernel", int, 2, _pos), ("stride", int, None, _pos)],
    "gap": [],
    "fc": [("units", int, REQUIRED, _pos), ("act", str, "relu", _act)],
    "act": [("fn", str, REQUIRED, dict(check=lambda v: v in ACTIVATIONS[:-1], expect="one of relu, relu6, hardswish"))],
}
SPATIAL = ("conv", "dwsep", "residual", "maxpool", "avgpool")


def builtin_names():
    return sorted(f[:-5] for f in os.listdir(BUILTIN_DIR) if f.endswith(".json"))


def load_spec(name_or_path):
    """A built-in name or a path to a spec file -> normalised spec dict."""
    if name_or_path.endswith(".json") or os.sep in name_or_path:
        if not os.path.isfile(name_or_path):
            raise UserError("architecture spec %s does not exist; pass a built-in name (%s) or a .json spec "
                            "file" % (name_or_path, ", ".join(builtin_names())))
        return normalise(load_json(name_or_path, FIX, UserError), name_or_path)
    if name_or_path not in builtin_names():
        raise UserError("unknown architecture %r; choose one of: %s, or pass a spec file PATH.json "
                        "(python build.py info --archs)" % (name_or_path, ", ".join(builtin_names())))
    return normalise(load_json(os.path.join(BUILTIN_DIR, name_or_path + ".json"), FIX, UserError),
                     "built-in architecture " + name_or_path)


def normalise(doc, where):
    """Check every block's type and fields; return {"name", "description", "blocks": [full blocks]}."""
    kw = dict(error=UserError)
    require_dict(doc, where, FIX, **kw)
    name = field(doc, "name", str, where, FIX, check=lambda v: v.strip(), expect="a non-empty string", **kw)
    blocks = field(doc, "blocks", list, where, FIX, check=lambda v: len(v) > 0, expect="a non-empty list", **kw)
    unknown = sorted(set(doc) - {"name", "description", "blocks"})
    if unknown:
        raise UserError("%s: unknown key %r; %s" % (where, unknown[0], FIX))
    out, flat = [], False
    for i, b in enumerate(blocks, 1):
        prefix = "block %d " % i
        require_dict(b, where, FIX, path="block %d" % i, **kw)
        kind = field(b, "type", str, where, FIX, check=lambda v: v in BLOCKS,
                     expect="one of " + ", ".join(sorted(BLOCKS)), prefix=prefix, **kw)
        prefix = "block %d (%s) " % (i, kind)
        spec = BLOCKS[kind]
        extra = sorted(set(b) - {"type"} - {f[0] for f in spec})
        if extra:
            raise UserError("%s: %sfield %r is not a field of %s (it has: %s); %s" % (
                where, prefix, extra[0], kind, ", ".join(f[0] for f in spec) or "none", FIX))
        full = {"type": kind}
        for key, t, default, chk in spec:
            dflt = {} if default is REQUIRED else {"default": default}
            full[key] = field(b, key, t, where, FIX, prefix=prefix, **dict(chk, **dict(dflt, **kw)))
        if kind in ("maxpool", "avgpool") and full["stride"] is None:
            full["stride"] = full["kernel"]
        if kind == "conv" and full["padding"] is None:
            full["padding"] = full["kernel"] // 2
        if kind in SPATIAL and flat:
            raise UserError("%s: %sfollows a gap/fc block, after which the image is flat; move it before the "
                            "first gap or fc block" % (where, prefix))
        flat = flat or kind in ("gap", "fc")
        out.append(full)
    return {"name": name, "description": doc.get("description", ""), "blocks": out}


def scale_channels(c, m):
    """Channels of a layer at width multiplier m: unchanged at 1, else a multiple of 4 (SIMD-friendly), >= 1."""
    if m == 1:
        return c
    v = c * m
    return max(1, int(round(v))) if v < 4 else int(4 * round(v / 4.0))


def scaled_blocks(spec, m):
    return [dict(b, **{k: scale_channels(b[k], m) for k in ("channels", "units") if k in b}) for b in spec["blocks"]]


def parse_widths(text, groups):
    """--group-widths "1,1,1.5,2" -> [1.0, 1.0, 1.5, 2.0]; None -> all 1."""
    if text is None:
        return [1.0] * groups
    try:
        widths = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise UserError("--group-widths %r must be comma-separated numbers, one per group (e.g. 1,1,1.5,2)" % (text,))
    if len(widths) != groups:
        raise UserError("--group-widths has %d values but the model has %d groups; give one multiplier per group"
                        % (len(widths), groups))
    bad = [w for w in widths if not 0.1 <= w <= 8]
    if bad:
        raise UserError("--group-widths: multiplier %g is outside 0.1..8" % bad[0])
    return widths
