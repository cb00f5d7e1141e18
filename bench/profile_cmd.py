"""`python build.py profile [BUNDLE]`: profile a host bundle's operating points here, or plot a profile.

  python build.py profile                         artifacts/host-cpu: plot its profile.json, or measure it first
  python build.py profile artifacts/xu3           plot the profile the board wrote (copied back into the bundle)
  python build.py profile BUNDLE --measure --quick   measure again on this machine (host bundles)

The measuring is the runtime's own (runtime/profiler.py, `python -m runtime profile BUNDLE` on a board); the
plot is bench/profile_plot.py.
"""
import os

from compile.errors import UserError
from runtime import profile_schema as ps
from runtime import profiler
from runtime.bundle import read_manifest, read_profile


def add_arguments(p):
    p.add_argument("bundle", nargs="?", default=os.path.join("artifacts", "host-cpu"),
                   help="bundle directory (default %(default)s)")
    p.add_argument("--profile", metavar="FILE", default=None,
                   help="profile to plot or write (default BUNDLE/profile.json); the PNG goes next to it")
    p.add_argument("--measure", action="store_true",
                   help="measure even if the profile exists (host bundles only; on a board: python -m runtime "
                        "profile BUNDLE)")
    p.add_argument("--plot-only", action="store_true", help="never measure; fail if there is no profile")
    p.add_argument("--quick", action="store_true", help="measure with fewer runs (seconds here)")
    p.add_argument("--threads", default=None, help="thread counts to sweep (default 1 and the CPU count)")
    p.add_argument("--levels", default=None, help="levels to profile (default: all)")
    p.add_argument("--backends", default="auto", help="engine bindings, e.g. tflite,onnx (default: the bundle's)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per point (default 300, quick 90)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per point (default 20, quick 5)")


def measure_here(bundle, out, log=print, **opts):
    """Run the runtime's sweep on this machine (opts: profiler flags, e.g. quick=True); returns (profile, path)."""
    return profiler.run(profiler.options(bundle, out=out, **opts), log)


def plot(prof, path, log=print):
    """Draw profile.png next to the profile at `path`; returns the PNG's path."""
    from bench.profile_plot import plot_profile
    png = os.path.splitext(path)[0] + ".png"
    try:
        plot_profile(prof, png)
    except ImportError:
        raise UserError("matplotlib is not installed: pip install -r requirements.txt")
    log("wrote %s (from %s, measured %s on %s)" % (png, path, prof.get("created", "?"),
                                                   (prof.get("platform") or {}).get("board", "?")))
    return png


def main(args):
    bundle = args.bundle
    man = read_manifest(bundle)
    path = args.profile or os.path.join(bundle, ps.PROFILE_FILE)
    board = man["target"].get("board")
    if args.measure or (not os.path.isfile(path) and not args.plot_only):
        if board:
            raise UserError("%s is a %s bundle: profile it on the board (python -m runtime profile BUNDLE), copy "
                            "%s back into %s, then run this again to plot it"
                            % (bundle, board, ps.PROFILE_FILE, bundle))
        prof, path = measure_here(bundle, path, quick=args.quick, threads=args.threads, levels=args.levels,
                                  backends=args.backends, runs=args.runs, warmup=args.warmup)
    else:
        prof = read_profile(path, man)
        for line in profiler.summary_lines(prof):
            print(line)
    plot(prof, path)
    return 0
