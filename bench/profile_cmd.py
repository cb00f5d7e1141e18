"""`python build.py profile [BUNDLE]`: profile a host bundle's operating points here, or plot a profile.

  python build.py profile                         artifacts/host-cpu: plot its profile.json, or measure it first
  python build.py profile artifacts/xu3           plot the profile the board wrote (copied back into the bundle)
  python build.py profile BUNDLE --measure --quick   measure again on this machine (host bundles)

The measuring is board_scripts/profile.py's own code (the boards run that file directly).
"""
import argparse
import importlib.util
import os
import sys

from compile.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILER = os.path.join(ROOT, "board_scripts", "profile.py")


def load_profiler():
    """board_scripts/profile.py as a module (it is a script, not a package member)."""
    mod = sys.modules.get("dynn_board_profile")
    if mod is None:
        spec = importlib.util.spec_from_file_location("dynn_board_profile", PROFILER)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["dynn_board_profile"] = mod
    return mod


def add_arguments(p):
    p.add_argument("bundle", nargs="?", default=os.path.join("artifacts", "host-cpu"),
                   help="bundle directory (default %(default)s)")
    p.add_argument("--profile", metavar="FILE", default=None,
                   help="profile to plot or write (default BUNDLE/profile.json); the PNG goes next to it")
    p.add_argument("--measure", action="store_true",
                   help="measure even if the profile exists (host bundles only; boards run board_scripts/profile.py)")
    p.add_argument("--plot-only", action="store_true", help="never measure; fail if there is no profile")
    p.add_argument("--quick", action="store_true", help="measure with fewer runs (seconds here)")
    p.add_argument("--threads", default=None, help="thread counts to sweep (default 1 and the CPU count)")
    p.add_argument("--levels", default=None, help="levels to profile (default: all)")
    p.add_argument("--backends", default="auto", help="engine bindings, e.g. tflite,onnx (default: the bundle's)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per point (default 300, quick 90)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per point (default 20, quick 5)")


def measure_options(bundle, out, quick=True, threads=None, levels=None, backends="auto", runs=None, warmup=None,
                    no_plot=False):
    """The option namespace board_scripts/profile.py's run() takes, for a measurement on this machine."""
    return argparse.Namespace(bundle=bundle, quick=quick, clusters=None, freqs=None, gpu_freqs=None, threads=threads,
                              levels=levels, backends=backends, runs=runs, warmup=warmup, rounds=None, energy_s=None,
                              out=out,
                              no_plot=no_plot, board=None, sysfs_root="/", state_dir=None)


def measure_here(opts, log=print):
    """Run the board profiler's sweep on this machine; RuntimeUserError/PlatformError become UserError."""
    prof_mod = load_profiler()
    try:
        return prof_mod.run(opts, log)
    except prof_mod.ProfileError as exc:
        raise UserError(str(exc))
    except Exception as exc:  # noqa: BLE001 - runtime errors are not compile errors; keep them one line
        if type(exc).__name__ in ("RuntimeUserError", "PlatformError"):
            raise UserError(str(exc))
        raise


def main(args):
    from runtime.bundle import read_manifest
    from runtime.errors import RuntimeUserError
    from runtime import profile_data as pdata
    prof_mod = load_profiler()
    bundle = args.bundle
    try:
        man = read_manifest(bundle)
    except RuntimeUserError as exc:
        raise UserError(str(exc))
    path = args.profile or os.path.join(bundle, pdata.PROFILE_FILE)
    board = man["target"].get("board")
    if args.measure or (not os.path.isfile(path) and not args.plot_only):
        if board:
            raise UserError("%s is a %s bundle: profile it on the board (python3 board_scripts/profile.py %s), copy "
                            "%s back into the bundle, then run this again to plot it"
                            % (bundle, board, os.path.basename(os.path.normpath(bundle)), pdata.PROFILE_FILE))
        opts = measure_options(bundle, path, args.quick, args.threads, args.levels, args.backends, args.runs,
                               args.warmup)
        _, _, png = measure_here(opts)
        if png is None:
            raise UserError("matplotlib is not installed: pip install matplotlib (requirements.txt)")
        return 0
    if not os.path.isfile(path):
        raise UserError("no profile at %s; measure it: python build.py profile %s --measure (host bundles) or on the "
                        "board: python3 board_scripts/profile.py BUNDLE, and copy profile.json back" % (path, bundle))
    try:
        prof = pdata.read_profile(path)
    except RuntimeUserError as exc:
        raise UserError(str(exc))
    for line in prof_mod.summary_lines(prof):
        print(line)
    png = os.path.splitext(path)[0] + ".png"
    try:
        prof_mod.plot_profile(prof, png)
    except ImportError:
        raise UserError("matplotlib is not installed: pip install matplotlib (requirements.txt)")
    print("wrote %s (from %s, measured %s on %s)" % (png, path, prof.get("created", "?"),
                                                     (prof.get("platform") or {}).get("board", "?")))
    return 0
