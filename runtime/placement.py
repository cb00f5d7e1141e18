"""Placements (issue 14): which groups of one level run on which processing element (PE).

Every group is an independent path from the input to its logits, so the groups of a level can run at the
same time on different PEs and be combined with the level's weights when all are done (runtime.workers).

    {"cpu:0": [1, 2], "cpu:1": [3, 4]}                  two CPU sets, the Model's engine on each
    {"a15": [1, 2], "a7/tflite": [3, 4]}                board clusters (names or aliases), engine named
    {"cpu:0": [1], "cpu:1": {"groups": [2, 3], "engine": "onnx", "threads": 1}}

A PE is a cluster of the board file, "cpu:N", "cpu:N-M" or "cpu:N,M" (online CPUs), or "gpu" (TensorRT).
`/engine` or the dict form picks its engine (tflite, onnx, tensorrt; default: the Model's own CPU engine,
tensorrt on the GPU) and its thread count (default: one per CPU of the PE). TFLite runs any groups (one
signature per group); ONNX Runtime and TensorRT run a level as one graph, so a PE using them holds a prefix
1..j of the level, run as level j. Every mistake is one RuntimeUserError line.
"""
import numbers
from collections import namedtuple

from runtime.errors import RuntimeUserError

ENGINES = ("tflite", "onnx", "tensorrt")
GROUP_ENGINES = ("tflite",)  # engines that run any single group; the others run levels (prefixes)

PE = namedtuple("PE", "name cpus engine threads")  # cpus: frozenset (empty for the GPU); threads or None
Part = namedtuple("Part", "pe groups")


class BoardView(object):
    """What PE names may name here: online CPUs, the board's clusters and GPU (asked of the platform only
    when a name needs it, so "cpu:N" placements open nothing)."""

    def __init__(self, online, platform_getter):
        self.online, self._platform_getter = frozenset(online), platform_getter

    def cluster(self, name):
        p = self._platform_getter()
        try:
            canon = p.cluster(name)
        except RuntimeUserError:
            raise RuntimeUserError("placement names PE %r, which this board (%s) does not have; use one of: "
                                   "%s, cpu:N, cpu:N-M%s" % (name, p.board.name, ", ".join(p.clusters),
                                                             ", gpu" if p.gpu is not None else ""))
        return canon, frozenset(p.cluster_cpus(canon))

    def has_gpu(self):
        return self._platform_getter().gpu is not None


def _cpu_set(text, online):
    spec, cpus = text[4:], set()
    try:
        for item in spec.split(","):
            lo, _, hi = item.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise RuntimeUserError("placement PE %r is not a CPU set; write cpu:N, cpu:N-M or cpu:N,M" % text)
    missing = sorted(cpus - online)
    if not cpus or missing:
        raise RuntimeUserError("placement PE %r names CPU %s, which this board does not have online (online: "
                               "%s)" % (text, missing or spec, _cpus_text(online)))
    return frozenset(cpus)


def _cpus_text(cpus):
    return ",".join(str(c) for c in sorted(cpus))


def _pe(key, value, board, default_engine):
    """(PE, groups) for one entry of a placement dict."""
    if not isinstance(key, str):
        raise RuntimeUserError("placement keys name PEs as strings (e.g. 'cpu:0', 'a15', 'gpu'); got %r" % (key,))
    text, _, engine = key.partition("/")
    threads = None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"groups", "engine", "threads"})
        if unknown or "groups" not in value:
            raise RuntimeUserError("placement PE %r: the dict form is {'groups': [...], 'engine': ..., "
                                   "'threads': N}; got keys %s" % (key, sorted(value)))
        engine, threads, value = value.get("engine", engine), value.get("threads"), value["groups"]
    if text == "gpu":
        if not board.has_gpu():
            raise RuntimeUserError("placement names PE 'gpu' but this board has no GPU; use CPU PEs (cpu:N)")
        name, cpus, engine = "gpu", frozenset(), engine or "tensorrt"
        if engine != "tensorrt":
            raise RuntimeUserError("placement PE 'gpu' runs TensorRT only, not %r; write 'gpu' or 'gpu/tensorrt'"
                                   % engine)
    else:
        if text.startswith("cpu:"):
            cpus = _cpu_set(text, board.online)
            name = "cpu:" + _cpus_text(cpus)
        else:
            name, cpus = board.cluster(text)
        engine = engine or default_engine
        if engine not in ("tflite", "onnx"):
            raise RuntimeUserError("placement PE %r: engine %r does not run on CPUs; choose tflite or onnx"
                                   % (key, engine))
        threads = len(cpus) if threads is None else threads
        if not isinstance(threads, numbers.Integral) or isinstance(threads, bool) or not 1 <= threads <= len(cpus):
            raise RuntimeUserError("placement PE %r: threads must be an integer from 1 to %d (its CPUs), got %r"
                                   % (key, len(cpus), threads))
    if not isinstance(value, (list, tuple)) or not value:
        raise RuntimeUserError("placement PE %r: give its groups as a non-empty list of integers, got %r"
                               % (key, value))
    return PE(name, cpus, engine, None if threads is None else int(threads)), value


def _groups(key, groups, level, owner):
    out = []
    for g in groups:
        if not isinstance(g, numbers.Integral) or isinstance(g, bool) or not 1 <= g <= level:
            raise RuntimeUserError("placement PE %r names group %r, which is not in level %d (groups 1..%d)"
                                   % (key, g, level, level))
        if g in owner:
            raise RuntimeUserError("placement puts group %d on two PEs (%r and %r); give each group one PE"
                                   % (g, owner[g], key))
        owner[g] = key
        out.append(int(g))
    return tuple(sorted(out))


def parse(placement, level, board, default_engine, weights, scale, engines=ENGINES, heads=False):
    """A checked placement of `level`: a tuple of Parts ordered by their first group.

    default_engine: the CPU engine a PE gets when it names none; weights, scale: runtime.bundle.level_weights
    and level_scale (a level engine's prefix 1..j stands for level k's groups only when they are weighed alike);
    engines: those the bundle carries; heads: the bundle has level heads (a level engine then holds a whole
    level or nothing: its level-j output has level j's head, not level k's)."""
    if not isinstance(placement, dict) or not placement:
        raise RuntimeUserError("placement must be a non-empty dict of PE -> groups, e.g. {'cpu:0': [1, 2], "
                               "'cpu:1': [3, 4]}; got %r" % (placement,))
    owner, parts, names = {}, [], {}
    for key, value in placement.items():
        pe, groups = _pe(key, value, board, default_engine)
        if pe.engine not in engines:
            raise RuntimeUserError("placement PE %r uses %s, which this bundle does not carry (it has: %s)"
                                   % (key, pe.engine, ", ".join(engines)))
        if pe.name in names:
            raise RuntimeUserError("placement names PE %s twice (%r and %r); list each PE once"
                                   % (pe.name, names[pe.name], key))
        names[pe.name] = key
        groups = _groups(key, groups, level, owner)
        if pe.engine not in GROUP_ENGINES:
            _check_prefix(key, pe.engine, groups, level, weights, scale, heads)
        parts.append(Part(pe, groups))
    missing = sorted(set(range(1, level + 1)) - set(owner))
    if missing:
        raise RuntimeUserError("placement leaves group%s %s of level %d on no PE; place every group 1..%d"
                               % ("s" if len(missing) > 1 else "", missing, level, level))
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            if a.pe.cpus & b.pe.cpus:
                raise RuntimeUserError("placement PEs %s and %s share CPU %s; give each PE its own CPUs"
                                       % (a.pe.name, b.pe.name, _cpus_text(a.pe.cpus & b.pe.cpus)))
    return tuple(sorted(parts, key=lambda p: p.groups[0]))


def _effective(k, weights, scale):
    """Level k's weight of each of its groups (a plain mean gives every group level_scale[k-1])."""
    w = weights[k - 1]
    return [float(scale[k - 1])] * k if w is None else [float(v) for v in w]


def _check_prefix(key, engine, groups, level, weights, scale, heads=False):
    j = len(groups)
    if groups != tuple(range(1, j + 1)):
        raise RuntimeUserError("placement PE %r runs %s, which computes a level as one graph: it can hold groups "
                               "1..j of the level only, not %s; give it groups 1 to %d or use tflite for these"
                               % (key, engine, list(groups), j))
    if heads and j != level:
        raise RuntimeUserError("placement PE %r: this bundle's levels have their own heads, so %s's level-%d graph "
                               "cannot stand for groups 1..%d of level %d; give it all %d groups or use tflite there"
                               % (key, engine, j, j, level, level))
    wk, wj = _effective(level, weights, scale), _effective(j, weights, scale)
    ratio = [wk[g] / wj[g] for g in range(j)]
    if max(ratio) - min(ratio) > 1e-6 * max(abs(r) for r in ratio):
        raise RuntimeUserError("placement PE %r: this bundle weighs groups 1..%d differently at level %d than "
                               "at level %d, so %s's level-%d graph cannot stand for them; use tflite there"
                               % (key, j, level, j, engine, j))


def divisor(j, weights, scale):
    """What a level engine's level-j output is divided by to enter runtime.backends.base.combine as the
    part of groups 1..j: level j's weight of group 1. combine then applies the level's weight of group 1
    (or its scale), which _check_prefix made stand for every group of the prefix."""
    return _effective(j, weights, scale)[0]


def freeze(placement):
    """A hashable key of a placement as given, so a placement used before is found in microseconds."""
    if isinstance(placement, dict):
        return tuple(sorted(((k, freeze(v)) for k, v in placement.items()), key=repr))
    if isinstance(placement, (list, tuple)):
        return tuple(freeze(v) for v in placement)
    return type(placement), placement  # 4.0 == 4 and True == 1 as keys: the type keeps them apart


def describe(parts):
    """The placement as plain JSON in the dict form parse() reads back (profiles, the manager, logs)."""
    out = {}
    for p in parts:
        entry = {"groups": list(p.groups), "engine": p.pe.engine}
        if p.pe.threads is not None:
            entry["threads"] = p.pe.threads
        out[p.pe.name] = entry
    return out
