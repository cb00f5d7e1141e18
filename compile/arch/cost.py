"""Shapes, parameters and MACs of a path spec: the one place that walks a spec's geometry.

The model builder takes each block's input channels and size from walk(), so a spec that the table
accepts is exactly a spec the model can build. Parameters are counted as deployed (BatchNorm folded
into a bias); MACs count convolutions and fully connected layers (pools, adds and activations are free
next to them, and the hooks in compile.model.count_macs count the same way).
"""
from compile.errors import UserError
from compile.arch.spec import scaled_blocks

FIX = "remove the block, lower its stride/kernel, or train with a larger --input-size"


def _out(hw, kernel, stride, pad, where, what):
    o = (hw + 2 * pad - kernel) // stride + 1
    if o < 1:
        raise UserError("%s: %s (kernel %d, stride %d, padding %d) shrinks the %dx%d image to nothing; %s"
                        % (where, what, kernel, stride, pad, hw, hw, FIX))
    return o


def _conv(cin, cout, k, hw, groups=1):
    return cout * (cin // groups) * k * k + cout, cout * (cin // groups) * k * k * hw * hw


def walk(spec, input_size, in_channels, width=1.0, where=None):
    """[(index, block, cin, hw_in, cout, hw_out, params, macs)] of one path at width multiplier `width`."""
    where = where or "architecture %s at input %dx%d" % (spec["name"], input_size, input_size)
    rows, c, hw, flat = [], in_channels, input_size, None
    for i, b in enumerate(scaled_blocks(spec, width), 1):
        what = "block %d (%s)" % (i, b["type"])
        kind, cin, hin = b["type"], c, hw
        params = macs = 0
        if kind == "conv":
            hw = _out(hw, b["kernel"], b["stride"], b["padding"], where, what)
            c = b["channels"]
            params, macs = _conv(cin, c, b["kernel"], hw)
        elif kind == "dwsep":
            hw = _out(hw, b["kernel"], b["stride"], b["kernel"] // 2, where, what)
            c = b["channels"]
            p1, m1 = _conv(cin, cin, b["kernel"], hw, groups=cin)
            p2, m2 = _conv(cin, c, 1, hw)
            params, macs = p1 + p2, m1 + m2
        elif kind == "residual":
            hw = _out(hw, 3, b["stride"], 1, where, what)
            c = b["channels"]
            p1, m1 = _conv(cin, c, 3, hw)
            p2, m2 = _conv(c, c, 3, hw)
            p3, m3 = _conv(cin, c, 1, hw) if (cin != c or b["stride"] != 1) else (0, 0)
            params, macs = p1 + p2 + p3, m1 + m2 + m3
        elif kind in ("maxpool", "avgpool"):
            hw = _out(hw, b["kernel"], b["stride"], 0, where, what)
        elif kind == "gap":
            hw = 1
        elif kind == "fc":
            f = c * hw * hw if flat is None else c
            c, hw = b["units"], 1
            params, macs = f * c + c, f * c
            cin = f
        flat = flat if kind not in ("gap", "fc") else True
        rows.append((i, b, cin, hin, c, hw, params, macs))
    return rows


def layer_table(spec, input_size=32, in_channels=3, num_classes=10, width=1.0):
    """Printable rows of one path: dicts with layer, type, in, out, kernel, stride, hw, params, macs."""
    rows = []
    walked = walk(spec, input_size, in_channels, width)
    for i, b, cin, _, cout, hw, params, macs in walked:
        rows.append({"layer": "%s%d" % (b["type"], i), "type": b["type"], "in": cin, "out": cout,
                     "kernel": b.get("kernel", 0), "stride": b.get("stride", 1), "hw": hw,
                     "params": params, "macs": macs})
    _, _, _, _, c, hw, _, _ = walked[-1]
    f = c * hw * hw
    rows.append({"layer": "head", "type": "fc", "in": f, "out": num_classes, "kernel": 0, "stride": 1, "hw": 1,
                 "params": f * num_classes + num_classes, "macs": f * num_classes})
    return rows


def path_cost(spec, input_size=32, in_channels=3, num_classes=10, width=1.0):
    rows = layer_table(spec, input_size, in_channels, num_classes, width)
    return sum(r["params"] for r in rows), sum(r["macs"] for r in rows)


def level_costs(spec, widths, input_size=32, in_channels=3, num_classes=10):
    """Per level k (groups 1..k): params, MACs and the dynamic range implied by MACs (macs_k / macs_1)."""
    out, p_sum, m_sum, m1 = [], 0, 0, None
    for k, w in enumerate(widths, 1):
        p, m = path_cost(spec, input_size, in_channels, num_classes, w)
        p_sum, m_sum = p_sum + p, m_sum + m
        m1 = m1 or m_sum
        out.append({"level": k, "params": p_sum, "macs": m_sum, "macs_ratio": round(m_sum / float(m1), 4)})
    return out
