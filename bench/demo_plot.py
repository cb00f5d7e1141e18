"""timeline.png of `python build.py demo`: response times against the budget, level, hit rate, accuracy."""
import numpy as np

from bench.demo_run import SCHEDULE, budget_at, interval_series


# ---- plot --------------------------------------------------------------------------------------------
def plot_timeline(phases, infos, dur, settle_s, hi, lo, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"manager": "C0", "fixed": "C1"}
    fig, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.4, 1.4, 1.4]})
    ymax = 2.5 * hi
    ax = axes[0]
    for name, rec in phases.items():
        lat = np.minimum(rec["latency_ms"], ymax)
        clipped = rec["latency_ms"] > ymax
        who = "manager" if name == "manager" else "fixed full-width model"
        ax.plot(rec["t"][~clipped], lat[~clipped], ".", ms=2, alpha=0.35, color=colors[name],
                label="%s: response time of each inference" % who)
        ax.plot(rec["t"][clipped], lat[clipped], "^", ms=3, alpha=0.5, color=colors[name])
    tt = np.linspace(0, dur, 2000)
    ax.plot(tt, [budget_at(x, dur, hi, lo) for x in tt], color="k", lw=1.5, label="budget")
    ax.set_ylim(0, ymax * 1.03)
    ax.set_ylabel("response time (ms)\n(^ = clipped)")
    ax.legend(loc="upper left", fontsize=8, markerscale=4)
    for name, rec in phases.items():
        series = interval_series(rec, max(dur / 40.0, 0.25))
        ts = [s["t"] for s in series]
        axes[1].step(ts, [s["level"] for s in series], where="mid", color=colors[name], label=name)
        axes[2].plot(ts, [100 * s["hit_rate"] for s in series], "-o", ms=3, color=colors[name], label=name)
        axes[3].plot(ts, [100 * s["accuracy_so_far"] for s in series], color=colors[name], label=name)
    axes[1].set_ylabel("level\n(mean per interval)")
    axes[2].axhline(95, color="k", ls=":", lw=1)
    axes[2].set_ylabel("budget met (%)\nper interval")
    axes[2].set_ylim(-2, 102)
    axes[3].set_ylabel("accuracy so far (%)")
    axes[3].set_xlabel("time in phase (s)")
    for a in axes:
        l0, l1 = SCHEDULE["load"][0] * dur, SCHEDULE["load"][1] * dur
        a.axvspan(l0, l1, color="red", alpha=0.08)
        a.axvspan(l0, l0 + settle_s, color="red", alpha=0.08, hatch="//", fill=False, lw=0)
        a.grid(alpha=0.3)
    axes[0].text((SCHEDULE["load"][0] + SCHEDULE["load"][1]) / 2 * dur, ymax * 0.97,
                 "CPU load (second process); hatched: settling", ha="center", va="top", fontsize=8, color="darkred")
    axes[1].legend(loc="lower left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
