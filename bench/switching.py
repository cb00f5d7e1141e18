"""Switching levels: Model.set_level on the loaded engine vs reloading a single-level model.

Two questions, both at batch 1, interleaved round by round:
  switch only       set_level(k)                      vs  open the level-k file (interpreter + signature)
  to first result   set_level(k) then infer(x)        vs  open the level-k file and run it once
                                                          (the first call is where XNNPACK packs weights)
"""
import gc
import time

from bench.engines import Signature, open_interpreter
from bench.stats import ratio, summarize


def measure_switching(model, single_files, levels, x, threads, rounds, switches_per_sample=2000):
    set_level, switch_infer, reload_open, reload_first = [], [], [], []
    G = len(levels)
    model.infer(x, levels[0])
    for r in range(rounds):
        gc.collect()
        t = time.perf_counter()
        for i in range(switches_per_sample):
            model.set_level(levels[i % G])
        set_level.append((time.perf_counter() - t) / switches_per_sample)
        for i in range(G):
            k = levels[(i + r) % G]
            prev = levels[(i + r - 1) % G]
            model.set_level(prev)
            t = time.perf_counter()
            model.set_level(k)
            model.infer(x)
            switch_infer.append(time.perf_counter() - t)

            t = time.perf_counter()
            interp = open_interpreter(single_files[k], threads)
            sig = Signature(interp, "level%d_b%d" % (k, x.shape[0]))
            t_open = time.perf_counter()
            sig(x)
            t_first = time.perf_counter()
            reload_open.append(t_open - t)
            reload_first.append(t_first - t)
            del sig, interp
    out = {"set_level": summarize(set_level), "set_level_then_infer": summarize(switch_infer),
           "reload_open": summarize(reload_open), "reload_first_result": summarize(reload_first),
           "threads": threads, "batch": int(x.shape[0]), "rounds": rounds}
    out["ratio_open_vs_set_level"] = ratio(out["reload_open"]["median"], out["set_level"]["median"])
    out["ratio_first_result"] = ratio(out["reload_first_result"]["median"], out["set_level_then_infer"]["median"])
    return out
