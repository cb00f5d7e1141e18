"""Interleaved timing: everything compared runs side by side, round after round, in one process.

Each round times every item once (a block of calls lasting about `target_s`), starting from a different
item each round, so a slow minute of the machine hits all items alike; ratios are taken per round.
"""
import gc
import time

from bench.stats import paired_ratios, summarize


def _calibrate(fn, target_s, warmup):
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    fn()
    fn()
    one = (time.perf_counter() - t) / 2
    return max(1, int(round(target_s / max(one, 1e-7))))


def interleaved(items, rounds, target_s=0.02, warmup=3):
    """items: [(key, fn)] with fn() doing one call. Returns ({key: [seconds per call, one per round]},
    {key: calls per sample})."""
    inner = {key: _calibrate(fn, target_s, warmup) for key, fn in items}
    samples = {key: [] for key, _ in items}
    n = len(items)
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            for key, fn in items[r % n:] + items[:r % n]:
                reps = inner[key]
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                samples[key].append((time.perf_counter() - t) / reps)
    finally:
        if was:
            gc.enable()
    return samples, inner


def ladder_config(runners, levels, x, rounds, target_s, warmup=3):
    """Time every (implementation, level) in `runners` ({impl: {level: fn(x)}}) on input x, interleaved.

    Returns {"impls": {impl: {level: summary}}, "samples": {...}, "calls_per_sample": {...}} with summaries in
    seconds; the caller derives ratios from the raw per-round samples (paired_ratio)."""
    items = [((impl, k), (lambda f=fns[k]: f(x))) for impl, fns in runners.items() for k in levels if k in fns]
    samples, inner = interleaved(items, rounds, target_s, warmup)
    out = {impl: {} for impl in runners}
    for (impl, k), s in samples.items():
        out[impl][k] = summarize(s)
    return {"impls": out, "samples": samples, "calls_per_sample": inner}


def paired_ratio(config, a, b, level):
    """Per-round ratio of impl a to impl b at one level, summarised (None when either was not run)."""
    sa, sb = config["samples"].get((a, level)), config["samples"].get((b, level))
    if not sa or not sb:
        return None
    return paired_ratios(sa, sb)
