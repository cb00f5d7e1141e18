"""profile.png: accuracy vs latency and vs energy of a profile's operating points, the Pareto fronts drawn.

Drawn on the host (`python build.py profile BUNDLE`) from profile.json alone; the boards do not need matplotlib.
"""
from runtime import profile_schema as ps


def plot_profile(prof, path):
    """Accuracy vs latency and vs energy, every point grey, the Pareto fronts drawn and labelled.
    Raises ImportError without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    pts = prof["points"]
    byid = dict((p["id"], p) for p in pts)
    use_acc = all(p.get("accuracy") is not None for p in pts)

    def y(p):
        return 100.0 * p["accuracy"] if use_acc else p["level"]

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, axis, unit, key in ((axes[0], "latency", "ms, median", "latency_ms"),
                                (axes[1], "energy", "mJ", "energy_mj")):
        have = [p for p in pts if ps.cost(p, axis) is not None]
        if not have:
            reason = (prof.get("energy") or {}).get("reason") or "not measured"
            ax.text(0.5, 0.5, "no %s measurements on this machine:\n%s" % (axis, reason), ha="center", va="center",
                    wrap=True, transform=ax.transAxes, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title("accuracy vs %s" % axis)
            continue
        ax.scatter([ps.cost(p, axis) for p in have], [y(p) for p in have], s=14, color="0.7",
                   label="all %d operating points" % len(have), zorder=1)
        split = [p for p in have if p.get("placement")]  # issue 14: groups split over PEs
        if split:
            ax.scatter([ps.cost(p, axis) for p in split], [y(p) for p in split], s=40, marker="D", facecolors="none",
                       edgecolors="C1", label="groups split over PEs (%d)" % len(split), zorder=2)
        q8 = [p for p in have if ps.precision(p) == "int8"]  # issue 13: the int8 signatures
        if q8:
            ax.scatter([ps.cost(p, axis) for p in q8], [y(p) for p in q8], s=36, marker="s", facecolors="none",
                       edgecolors="C2", label="int8 (%d)" % len(q8), zorder=2)
        front = [byid[i] for i in prof["fronts"].get(axis, [])]
        fx, fy = [ps.cost(p, axis) for p in front], [y(p) for p in front]
        ax.step(fx, fy, where="post", color="C0", lw=1.5, zorder=2)
        ax.plot(fx, fy, "o", color="C0", ms=7, label="Pareto front (%d)" % len(front), zorder=3)
        for p, a, b in zip(front, fx, fy):
            ax.annotate(ps.label(p), (a, b), textcoords="offset points", xytext=(6, -11), fontsize=8)
        if axis == "latency":  # the tail matters for a deadline: median to p95 as a whisker
            ax.hlines(fy, fx, [p["latency_ms"].get("p95") or c for p, c in zip(front, fx)], color="C0", alpha=0.4,
                      lw=3, label="median to p95", zorder=2)
        lo, hi = min(ps.cost(p, axis) for p in have), max(ps.cost(p, axis) for p in have)
        if lo > 0 and hi / lo > 8:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
            ax.tick_params(axis="x", which="minor", labelsize=7)
        dr = prof["dynamic_range"]
        lines = []
        for name, d in (("all points", dr["points"][key]), ("front", dr["front"][key]),
                        ("levels alone", dr["levels"][key])):
            if d and d.get("ratio"):
                lines.append("%s: %.3g-%.3g %s (%.1fx)" % (name, d["min"], d["max"], unit.split(",")[0], d["ratio"]))
        ax.text(0.98, 0.03, "dynamic range\n" + "\n".join(lines), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, bbox=dict(boxstyle="round", fc="white", ec="0.8"))
        ax.set_xlabel("%s per inference (%s)" % (axis, unit))
        ax.set_ylabel("top-1 accuracy (%)" if use_acc else "level")
        ax.set_title("accuracy vs %s" % axis)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    b, plat = prof.get("bundle", {}), prof.get("platform", {})
    fig.suptitle("%s profile on %s (%s), batch 1: higher and further left is better" % (
        b.get("target", "?"), plat.get("board", "?"), ", ".join(sorted((prof.get("host") or {}).get("engines", {})))))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
