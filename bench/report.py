"""report.md from bench.json: the tables, the plots, and what the numbers were measured on."""
from bench.plots import LADDER, MEMORY, PARETO, pareto_points
from bench.stats import latency_front

DASH = "-"


def _ms(s, digits=3):
    return DASH if s is None else ("%." + str(digits) + "f") % (s * 1e3)


def _x(r, digits=2):
    return DASH if r is None else ("%." + str(digits) + "f") % r


def _spread(summary):
    """median (p10-p90) in ms."""
    if not summary:
        return DASH
    return "%.3f (%.3f-%.3f)" % (summary["median"] * 1e3, summary["p10"] * 1e3, summary["p90"] * 1e3)


def _ratio(summary):
    return DASH if not summary else "%.2f (%.2f-%.2f)" % (summary["median"], summary["p10"], summary["p90"])


def _pct(v):
    return DASH if v is None else "%.2f%%" % (100 * v)


def _mb(b):
    return DASH if b is None else "%.2f" % (b / 1e6)


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _headline(res):
    lines = []
    for c in res["latency"]:
        first, full = c["levels"][0], c["levels"][-1]
        dyn = [r["engine_vs_single"]["median"] for r in c["levels"] if r["engine_vs_single"]]
        lines.append("- %d thread(s), batch %d: level 1 %s ms -> level %d %s ms, a **%sx** range (MACs: %sx); "
                     "engine / single-level model %s-%s across levels; onnxruntime %sx and PyTorch %sx the "
                     "engine's time at the full level."
                     % (c["threads"], c["batch"], _ms(first["engine"]["median"]), full["level"],
                        _ms(full["engine"]["median"]), _x(c["dynamic_range"]), _x(c["ideal_range"]),
                        _x(min(dyn) if dyn else None), _x(max(dyn) if dyn else None),
                        _x((full["onnxruntime_vs_engine"] or {}).get("median")),
                        _x((full["pytorch_vs_engine"] or {}).get("median"))))
    sw = res["switching"]
    lines.append("- Switching: `set_level` %.2f us vs %.2f ms to reload a single-level model (**%.0fx**)."
                 % (sw["set_level"]["median"] * 1e6, sw["reload_open"]["median"] * 1e3, sw["ratio_open_vs_set_level"]))
    m = res["memory"]
    lines.append("- Memory with every level ready: **%sx** the full-width model alone (limit %.2fx), %sx one model "
                 "per level%s." % (_x(m["rss_ratio"].get("full")), m["limit"], _x(m["rss_ratio"].get("per_level")),
                                   ", %sx the dense-incremental bundle" % _x(m["rss_ratio"]["dense"])
                                   if "dense" in m["rss_ratio"] else ""))
    for p in res["peak"]:
        for a in p.get("achieved", []):
            lines.append("- %d thread(s), batch %d: the full level runs at %.1f GMAC/s, %s of this machine's "
                         "measured GEMM peak (%.1f GMAC/s)." % (p["threads"], a["batch"], a["macs_per_s"] / 1e9,
                                                               _pct(a["fraction"]), p["peak_macs_per_s"] / 1e9))
    return lines


def _latency_section(res):
    out = ["## 1, 2, 5. Latency ladder, cost of being dynamic, peers", "",
           "Every cell is the median per call (p10-p90 over rounds); the things in one table ran interleaved, "
           "round by round, in one process. Ratios are per-round ratios (median, p10-p90). *engine*: the bundle "
           "through `runtime.load` (TFLite/XNNPACK, one file, per-group signatures summed); *ideal*: level 1's "
           "time scaled by the MACs; *single*: a separately compiled single-level .tflite of that width; "
           "*onnxruntime*: the same bundle's model.onnx through the runtime; *PyTorch*: the same BatchNorm-folded "
           "paths, eager; *dense*: the dense-incremental baseline's level (its own network, more MACs); *engine / bare "
           "interpreter*: `Model.infer` against the same interpreter's signature runners called by hand and summed "
           "(the runtime's own overhead).", "",
           "![latency ladder](%s)" % LADDER, ""]
    for c in res["latency"]:
        out += ["### %d thread(s), batch %d" % (c["threads"], c["batch"]), ""]
        rows = []
        for r in c["levels"]:
            rows.append((r["level"], "%.2f" % (r["macs"] / 1e6), _spread(r["engine"]), _ms(r["ideal_s"]),
                         _ratio(r.get("engine_vs_bare")),
                         _spread(r["single"]), _ratio(r["engine_vs_single"]), _spread(r["onnxruntime"]),
                         _ratio(r["onnxruntime_vs_engine"]), _spread(r["pytorch"]), _ratio(r["pytorch_vs_engine"]),
                         _spread(r.get("dense"))))
        out += _table(("level", "MMACs", "engine ms", "ideal ms", "engine / bare interpreter", "single ms",
                       "engine / single", "onnxruntime ms",
                       "onnxruntime / engine", "PyTorch ms", "PyTorch / engine", "dense ms"), rows)
        out += ["", "Dynamic range latency(L%d)/latency(L1) = **%s** against %s implied by the MACs (%s of ideal)."
                % (c["levels"][-1]["level"], _x(c["dynamic_range"]), _x(c["ideal_range"]),
                   _x(c["range_vs_ideal"])), ""]
    return out


def _switching_section(res):
    sw = res["switching"]
    return ["## 3. Switching levels", "",
            "1 thread, batch 1, %d rounds. Reloading = opening the single-level .tflite (interpreter + signature "
            "runner); its first call is where XNNPACK packs the weights." % sw["rounds"], ""] + _table(
        ("", "this project", "reload a single-level model", "ratio"),
        [("switch only", "%.2f us (set_level)" % (sw["set_level"]["median"] * 1e6),
          "%s ms (open)" % _spread(sw["reload_open"]), "%.0fx" % sw["ratio_open_vs_set_level"]),
         ("switch and get a result", "%s ms (set_level + infer)" % _spread(sw["set_level_then_infer"]),
          "%s ms (open + first call)" % _spread(sw["reload_first_result"]), "%sx" % _x(sw["ratio_first_result"], 1))]
    ) + [""]


def _memory_section(res):
    m = res["memory"]
    names = {"engine": "this project: one file, all levels", "full": "full-width single-level model alone",
             "per_level": "one single-level model per level", "dense": "dense-incremental bundle, all levels"}
    rows = []
    for k in ("engine", "full", "per_level", "dense"):
        if k in m["rss_bytes"]:
            rows.append((names[k], _mb(m["file_bytes"][k]), _mb(m["rss_bytes"][k]["median"]),
                         DASH if k == "engine" else _x(m["rss_ratio"][k]),
                         DASH if k == "engine" else _x(m["file_ratio"][k])))
    out = ["## 4. Memory", "",
           "Resident memory growth (%s) in a fresh process: after loading and running every level/signature once "
           "(batch %s, 1 thread), minus before loading; median of %d process(es) each. The runtime must stay within "
           "%.2fx of the full-width model alone: **%s** (%sx)."
           % (m["method"], "/".join(map(str, m["batches"])), m["repeats"], m["limit"],
              {True: "met", False: "NOT met", None: "not measured"}[m["within_limit"]],
              _x(m["rss_ratio"].get("full"))),
           "", "Every file compared carries the same batch-size signatures (%s): XNNPACK packs the weights of every "
               "signature in a file at its first call, so each batch size holds its own packed copy, in the bundle "
               "and in the references alike." % "/".join(map(str, res["settings"].get("bundle_batch_sizes", []))),
           "", "![memory](%s)" % MEMORY, ""]
    out += _table(("what is loaded", "file MB", "RSS growth MB", "engine RSS / this", "engine file / this"), rows)
    if "dense" not in m["rss_bytes"]:
        out += ["", "Dense-incremental bundle: %s" % res["references"]["dense"]]
    return out + [""]


def _peak_section(res):
    rows = []
    for p in res["peak"]:
        for a in p.get("achieved", []):
            rows.append((p["threads"], a["batch"], "%.1f" % (p["peak_macs_per_s"] / 1e9),
                         "%.1f" % (a["macs_per_s"] / 1e9),
                         _pct(a["fraction"])))
    gemms = ", ".join("%s %s GMAC/s at %d thread(s)" % (k, "%.1f" % (v["max"] / 1e9), p["threads"])
                      for p in res["peak"] for k, v in sorted(p.get("gemms", {}).items()))
    return ["## 6. Distance to the machine's limit", "",
            "Peak: the faster of two float32 GEMMs on the same threads, best of several runs (%s). Achieved: MACs "
            "of the full level x batch / engine latency." % (gemms or DASH), ""] + _table(
        ("threads", "batch", "peak GMAC/s", "full level GMAC/s", "fraction of peak"), rows) + (
        ["", "A fraction above 100% means the GEMM was slowed by other work on the machine while it was measured."]
        if any(a["fraction"] > 1 for p in res["peak"] for a in p.get("achieved", [])) else []) + [""]


def _accuracy_section(res):
    acc = res["accuracy"]
    G = res["checkpoint"]["groups"]
    by = {s: {v["level"]: v["accuracy"] for v in acc[s].get("levels", [])} for s in ("grouped", "dense", "static")}
    rows = [(k, _pct(by["grouped"].get(k)), _pct(by["dense"].get(k)), _pct(by["static"].get(k)))
            for k in range(1, G + 1)]
    src = ", ".join("%s: %s" % (s, acc[s].get("source") if acc[s].get("levels") else acc[s]["status"].split(":")[0])
                    for s in ("grouped", "dense", "static"))
    out = ["## 7. Accuracy ladder", "",
           "CIFAR-10 test accuracy per level (static: the separately trained model of that width). Source: %s%s."
           % (src, "" if acc.get("same_data", True) else "; WARNING: the checkpoints were trained on different data"),
           ""] + _table(("level", "grouped-incremental (this project)", "dense-incremental", "static"), rows)
    if acc["dense"].get("status") != "ok":
        out += ["", "- dense-incremental: %s" % acc["dense"]["status"]]
    for m in acc["static"].get("missing", []):
        out += ["- static width %d: %s" % (m["width"], m["status"])]
    pts = pareto_points(res)
    front = latency_front(pts)
    out += ["", "![Pareto front of accuracy vs latency](%s)" % PARETO, "",
            "Pareto front (1 thread, batch 1; static widths at the latency of the same-width single-level file): %s."
            % (", ".join("%s (%.3f ms, %.2f%%)" % (p[2], p[0] * 1e3, 100 * p[1]) for p in front) or "no points"), ""]
    return out


def _manager_section(res):
    mgr = res["manager"]
    dc, demo = mgr["decision_cost"], mgr["demo"]
    out = ["## 8. Manager", ""]
    if dc.get("status") == "ok":
        out.append("- Decision cost (record a latency, choose the next operating point): median %.1f us, mean %.1f "
                   "us, p99 %.1f us over %s calls on a ladder of %s points; measured in %s."
                   % (dc["p50_us"], dc["mean_us"], dc["p99_us"], dc.get("calls"), dc.get("ladder"), dc["source"]))
    else:
        out.append("- Decision cost: %s (%s)" % (dc["status"], dc.get("note", "")))
    if demo["status"] == "ok":
        hits = ", ".join("%s %s" % (k.replace(".load_settled", " during the load").replace(".all", " whole run"),
                                    _pct(v)) for k, v in sorted(demo["hit_rates"].items()))
        out.append("- Budget hit rate from the demo's last run (%s%s; budget %s ms): %s; criterion (manager >= %s "
                   "during the load) %s." % (
                       demo["file"], ", quick mode" if demo.get("quick") else "", _x(demo.get("budget_ms"), 3),
                       hits or "no hit rate recorded", _pct(demo.get("min_hit_rate")),
                       {True: "met", False: "NOT met", None: "not recorded"}[demo.get("passed")]))
    else:
        out.append("- Budget hit rate: %s (%s)" % (demo["status"], demo.get("note", "")))
    return out + [""]


def _machine_section(res):
    m = res["machine"]
    v = ", ".join("%s %s" % (k, val) for k, val in m["versions"].items() if val)
    s = res["settings"]
    busy = [la for la in (m.get("load_average_start"), m.get("load_average_end")) if la]
    out = ["## How these numbers were made", "",
           "- Command: `%s` (%s mode, %.0f s)" % (res["command"], res["mode"], res["seconds"]),
           "- Machine: %s (%s), %d usable of %d logical cores, %s" % (m["cpu"], m["arch"], m["cores_usable"],
                                                                      m["cores_logical"], m["os"]),
           "- Libraries: %s; TFLite binding %s" % (v, res["engine"]),
           "- Model: %s (%s, %s, %d groups, sha256 %s); bundle %s (target %s)" % (
               res["checkpoint"]["file"], res["checkpoint"]["scheme"], res["checkpoint"]["arch"],
               res["checkpoint"]["groups"], res["checkpoint"]["sha256"][:12], res["bundle"], res["target"]),
           "- Timing: %d interleaved rounds per table, each sample a block of calls lasting about %.0f ms, after "
           "warm-up; threads %s; OMP_WAIT_POLICY=%s; onnxruntime without spinning threads; time.perf_counter."
           % (s["rounds"], s["target_s"] * 1e3, "/".join(map(str, s["threads"])), s.get("omp_wait_policy")),
           "- Load average at start / end: %s / %s" % (m.get("load_average_start"), m.get("load_average_end")),
           "- Created %s" % res["created"]]
    ag = res.get("agreement_max_abs", {})
    if ag:
        out += ["- Outputs agree with the engine's (max abs difference over levels): " + "; ".join(
            "%s: %s" % (cfg, ", ".join("%s %.1e" % (k, v) for k, v in d.items())) for cfg, d in ag.items())]
    for n in res.get("notes", []):
        out.append("- Note: %s" % n)
    if any(la[0] > 0.5 * m["cores_usable"] for la in busy):
        out += ["", "**The machine was busy during this run (load average above half its cores): the absolute numbers "
                    "are noisy; the ratios less so, since the things compared ran interleaved.**"]
    if res["mode"] == "quick":
        out += ["", "*Quick (smoke) mode: batch 1 only, few rounds. Run the full benchmark for the published numbers.*"]
    return out + [""]


def render(res):
    lines = ["# Benchmark: width-switchable grouped CNN on %s" % res["machine"]["cpu"], "",
             "Generated by `%s`; every comparison is a ratio measured in this one run. Raw numbers: "
             "[bench.json](bench.json)." % res["command"], "", "## Summary", ""]
    lines += _headline(res) + [""]
    lines += ["| check | value | limit | result |", "|---|---|---|---|"]
    for c in res["checks"]:
        lines.append("| %s | %s | %s | %s |" % (c["name"], DASH if c["value"] is None else "%.3g" % c["value"],
                                               c["limit"], {True: "ok", False: "**failed**", None: "n/a"}[c["ok"]]))
    lines.append("")
    from bench.parallel import report_section as _parallel_section
    from bench.precision import report_section as _precision_section
    for section in (_latency_section, _switching_section, _memory_section, _peak_section, _parallel_section,
                    _precision_section, _accuracy_section, _manager_section, _machine_section):
        lines += section(res)
    return "\n".join(lines).rstrip() + "\n"


def write_report(res, path):
    from runtime.bundle import atomic_write_bytes
    atomic_write_bytes(path, render(res).encode("utf-8"))
