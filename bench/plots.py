"""The report's plots, drawn from bench.json alone: latency ladder, accuracy-latency Pareto front, memory bars."""
import os

from bench.stats import latency_front

LADDER, PARETO, MEMORY = "latency_ladder.png", "pareto.png", "memory.png"
STYLE = {"engine": ("this project (one file, TFLite)", "C0", "o", "-"),
         "single": ("single-level files (TFLite)", "C1", "s", "--"),
         "onnxruntime": ("onnxruntime (same bundle)", "C2", "^", "-."),
         "pytorch": ("PyTorch eager", "C3", "v", ":"),
         "dense": ("dense-incremental (TFLite)", "C4", "D", "--")}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def ladder(result, path):
    plt = _plt()
    cfgs = result["latency"]
    threads = sorted(set(c["threads"] for c in cfgs))
    batches = sorted(set(c["batch"] for c in cfgs))
    fig, axes = plt.subplots(len(threads), len(batches), figsize=(5.2 * len(batches), 3.8 * len(threads)),
                             squeeze=False)
    for c in cfgs:
        ax = axes[threads.index(c["threads"])][batches.index(c["batch"])]
        lv = [r["level"] for r in c["levels"]]
        for impl, (label, color, marker, ls) in STYLE.items():
            pts = [(r["level"], r[impl]) for r in c["levels"] if r.get(impl)]
            if not pts:
                continue
            ax.errorbar([p[0] for p in pts], [p[1]["median"] * 1e3 for p in pts],
                        yerr=[[(p[1]["median"] - p[1]["p10"]) * 1e3 for p in pts],
                              [(p[1]["p90"] - p[1]["median"]) * 1e3 for p in pts]],
                        label=label, color=color, marker=marker, linestyle=ls, capsize=2, markersize=4)
        ideal = [r["ideal_s"] * 1e3 for r in c["levels"] if r["ideal_s"] is not None]
        if len(ideal) == len(lv):
            ax.plot(lv, ideal, color="grey", linestyle=(0, (1, 1)), label="ideal (proportional to MACs)")
        ax.set_title("%d thread(s), batch %d" % (c["threads"], c["batch"]), fontsize=10)
        ax.set_xlabel("level")
        ax.set_ylabel("latency per call (ms)")
        ax.set_xticks(lv)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Latency of every level (median, p10-p90)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_points(result):
    """[(latency s, accuracy, label, scheme)] at 1 thread, batch 1: grouped levels through the engine, static
    widths at the latency of the single-level file of that width (same network), dense levels through its file."""
    cfg = next((c for c in result["latency"] if c["threads"] == 1 and c["batch"] == 1), None)
    if cfg is None:
        return []
    by_level = {r["level"]: r for r in cfg["levels"]}
    acc = result["accuracy"]
    pts = []
    for scheme, impl in (("grouped", "engine"), ("static", "single"), ("dense", "dense")):
        for v in acc.get(scheme, {}).get("levels", []):
            r = by_level.get(v["level"])
            if r and r.get(impl):
                pts.append((r[impl]["median"], v["accuracy"], "%s L%d" % (scheme, v["level"]), scheme))
    return pts


def pareto(result, path):
    plt = _plt()
    pts = pareto_points(result)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"grouped": "C0", "static": "C1", "dense": "C4"}
    names = {"grouped": "grouped-incremental (this project, one file)", "static": "static (one model per width)",
             "dense": "dense-incremental (Tann et al.)"}
    for scheme in ("grouped", "static", "dense"):
        s = sorted((p for p in pts if p[3] == scheme), key=lambda p: p[0])
        if s:
            ax.plot([p[0] * 1e3 for p in s], [100 * p[1] for p in s], marker="o", color=colors[scheme],
                    label=names[scheme])
            for p in s:
                ax.annotate(p[2].split()[-1], (p[0] * 1e3, 100 * p[1]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    front = latency_front(pts)
    if front:
        xs, ys = [], []
        for p in front:
            if xs:
                xs.append(p[0] * 1e3)
                ys.append(ys[-1])
            xs.append(p[0] * 1e3)
            ys.append(100 * p[1])
        ax.plot(xs, ys, color="black", alpha=0.35, linewidth=4, zorder=0, label="Pareto front")
    if not pts:
        ax.text(0.5, 0.5, "no accuracy records", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency, 1 thread, batch 1 (ms)")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.set_title("Accuracy vs latency", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


MEMORY_LABELS = {"engine": "this project\n(all levels)", "full": "full width\nalone",
                 "per_level": "one model\nper level",
                 "dense": "dense-incr.\n(all levels)"}


def memory(result, path):
    plt = _plt()
    mem = result["memory"]
    kinds = [k for k in ("engine", "full", "per_level", "dense") if k in mem["rss_bytes"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    rss = [mem["rss_bytes"][k]["median"] / 1e6 for k in kinds]
    size = [mem["file_bytes"][k] / 1e6 for k in kinds]
    colors = ["C0" if k == "engine" else "C7" for k in kinds]
    for ax, vals, title in ((axes[0], rss, "resident memory growth, all levels run once (MB)"),
                            (axes[1], size, "engine file size (MB)")):
        bars = ax.bar(range(len(kinds)), vals, color=colors)
        for b, v in zip(bars, vals):
            ax.annotate("%.2f" % v, (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(kinds)))
        ax.set_xticklabels([MEMORY_LABELS[k] for k in kinds], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if "full" in mem["rss_bytes"]:
        lim = mem["limit"] * mem["rss_bytes"]["full"]["median"] / 1e6
        axes[0].axhline(lim, color="red", linestyle="--", linewidth=1, label="%.2fx full width" % mem["limit"])
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(result, out):
    for name, fn in ((LADDER, ladder), (PARETO, pareto), (MEMORY, memory)):
        fn(result, os.path.join(out, name))
    return [LADDER, PARETO, MEMORY]
