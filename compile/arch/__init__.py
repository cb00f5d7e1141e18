"""Group path architectures as data: a JSON spec per path (spec.py), its geometry and cost (cost.py),
and the built-ins (builtins/*.json). docs/architectures.md documents the format.

A grouped model is G such paths, path g built at channel multiplier widths[g-1]; level k combines the
logit contributions of paths 1..k. These numbers are the contract the model, the checkpoint and the
compiler share, so they live here.
"""
from compile.arch.cost import layer_table, level_costs, path_cost, walk  # noqa: F401
from compile.arch.spec import builtin_names, load_spec, parse_widths, scale_channels  # noqa: F401


def spec_of(meta):
    """The spec a checkpoint sidecar describes: its own copy (arch_spec), else the built-in it names."""
    from compile.arch.spec import normalise
    if meta.get("arch_spec") is not None:
        return normalise(meta["arch_spec"], "the checkpoint's arch_spec")
    return load_spec(meta["arch"])


def widths_of(meta):
    return [float(w) for w in meta.get("group_widths") or [1.0] * int(meta["groups"])]


def grouped_level_costs(name, groups, input_size=32, in_channels=3, num_classes=10):
    """[(level, params, macs)] of G equal groups of a built-in (kept for callers of the old API)."""
    rows = level_costs(load_spec(name), [1.0] * groups, input_size, in_channels, num_classes)
    return [(r["level"], r["params"], r["macs"]) for r in rows]
