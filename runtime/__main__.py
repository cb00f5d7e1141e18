"""python -m runtime COMMAND: what a person at a board's shell runs (every command has --help).

  info | verify | run       a bundle's levels; its golden vectors on this device; latency per level
  restore                   put back clocks saved by a process that died (SIGKILL, power cut)
  profile                   sweep the operating points of a bundle on this board -> BUNDLE/profile.json
  doctor                    read-only check of this board: sysfs paths, governors, sensors, bindings
  trt-build | trt-selftest  build the TensorRT engine on a Jetson; check it and time its levels

Expected failures print one line and exit 1.
"""
import argparse
import sys
import time

import numpy as np

from runtime.errors import RuntimeUserError


def _load(args, prepare=True):
    from runtime import load
    return load(args.bundle, backend=args.backend, threads=args.threads, prepare=prepare)


def cmd_info(args):
    with _load(args, prepare=False) as m:
        man = m.manifest
        print("bundle   %s" % args.bundle)
        print("target   %s: %s" % (man["target"]["name"], man["target"]["description"]))
        print("model    %s, %s, %d groups, input %s, %d classes" % (
            man["model"]["arch"], man["model"]["scheme"], man["model"]["groups"], man["input"]["shape"][1:],
            m.num_classes))
        print("engines  %s (running on %s%s)" % (", ".join(sorted(man["engines"])), m.backend.name,
                                                ", %s" % m.backend.binding if hasattr(m.backend, "binding") else ""))
        print("%-6s %10s %9s %9s" % ("level", "params", "MMACs", "test acc"))
        for lv in man["levels"]:
            acc = lv.get("test_accuracy")
            print("%-6d %10d %9.2f %9s" % (lv["level"], lv["params"], lv["macs"] / 1e6,
                                           "-" if acc is None else "%.2f%%" % (100 * acc)))
    return 0


def cmd_verify(args):
    from runtime.bundle import golden_record, load_golden
    with _load(args) as m:
        g = load_golden(m.bundle_dir, m.manifest)
        tol = m.manifest["golden"]
        fp16 = getattr(m.backend, "precision", "fp32") == "fp16"  # the engine's own record, not the manifest's
        atol = tol.get("atol_fp16", 0.05) if fp16 else tol["atol"]
        pre = float(np.max(np.abs(m.preprocess(g["images"]) - g["input"])))
        print("preprocess  max |diff| %.2e  %s" % (pre, "ok" if pre <= 1e-5 else "MISMATCH"))
        bad = int(pre > 1e-5)
        for prec in m.precisions:  # every precision the engine carries, against its own golden logits
            m.set_operating_point(precision=prec)
            q = golden_record(m.manifest, m.backend.name, prec)
            for k in m.levels:
                want = g["level%d" % k] if q is None else g[q["keys"].format(k=k)]
                a, r = (atol, tol["rtol"]) if q is None else (q["atol"][k - 1], 0.0)
                out = m.infer(g["input"], k)
                err = float(np.max(np.abs(out - want)))
                ok = np.allclose(out, want, atol=a, rtol=r)
                same = int((out.argmax(1) == want.argmax(1)).sum())
                print("level %d %-4s max |diff| %.2e  top-1 agrees %d/%d  %s" % (
                    k, prec if len(m.precisions) > 1 else "", err, same, len(out), "ok" if ok else "MISMATCH"))
                bad += not ok
    print("verify: %s (%s backend, %d levels)" % ("PASSED" if not bad else "FAILED", m.backend.name, len(m.levels)))
    return 0 if not bad else 1


def _in_range(name, value, low, high):
    if not low <= value <= high:
        raise RuntimeUserError("%s must be from %d to %d, got %d" % (name, low, high, value))


def cmd_run(args):
    from runtime.profile_schema import p95
    _in_range("--batch", args.batch, 1, 4096)
    _in_range("--runs", args.runs, 1, 10 ** 6)
    with _load(args) as m:
        shape = (args.batch,) + m.input_shape
        x = np.random.RandomState(0).standard_normal(shape).astype(np.float32)
        levels = [args.level] if args.level is not None else m.levels
        for k in levels:
            m.set_level(k)  # every level checked before the first line of the table
        rec = {lv["level"]: lv for lv in m.manifest["levels"]}  # what the compiler recorded per level
        print("%-6s %9s %9s %12s %12s  (batch %d, %d runs, backend %s)" % (
            "level", "MMACs", "test acc", "median ms", "p95 ms", args.batch, args.runs, m.backend.name))
        for k in levels:
            m.set_level(k)
            for _ in range(3):
                m.infer(x)
            ts = []
            for _ in range(args.runs):
                t = time.perf_counter()
                m.infer(x)
                ts.append(time.perf_counter() - t)
            ts = np.asarray(ts) * 1e3
            acc = rec[k].get("test_accuracy")
            print("%-6d %9.2f %9s %12.3f %12.3f" % (k, rec[k]["macs"] / 1e6, "-" if acc is None else
                                                    "%.2f%%" % (100 * acc), np.median(ts), p95(ts)))  # the one p95
    return 0


def cmd_restore(args):
    from runtime.platform import restore_from_state
    written = restore_from_state(args.state_dir, board=args.board, sysfs_root=args.sysfs_root)
    for path in written:
        print("restored %s" % path)
    if not written:
        print("nothing to restore: no saved board state")
    return 0


# Commands in modules of their own: each exposes add_arguments(parser) and main(args) -> int, and is
# imported only when asked for, so that `--help` and the core commands never import TensorRT or CUDA.
TOOLS = (
    ("profile", "runtime.profiler", "measure a bundle's operating points on this board -> BUNDLE/profile.json"),
    ("doctor", "runtime.doctor", "read-only check of this board and what a bundle needs"),
    ("trt-build", "runtime.trt.builder", "build the TensorRT engine of a nano-gpu bundle on this device"),
    ("trt-selftest", "runtime.trt.selftest", "check a TensorRT engine's golden vectors and time its levels"),
)


def build_parser(argv=()):
    p = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def bundle_cmd(name, help_, func):
        s = sub.add_parser(name, help=help_, description=help_)
        s.add_argument("bundle", help="bundle directory (holds manifest.json)")
        s.add_argument("--backend", default="auto", choices=("auto", "tflite", "onnx", "tensorrt"),
                       help="engine binding (default: the bundle's own engine, else ONNX)")
        s.add_argument("--threads", type=int, default=None, help="engine threads")
        s.set_defaults(func=func)
        return s

    bundle_cmd("info", "show a bundle's target, engines and levels", cmd_info)
    bundle_cmd("verify", "run the bundle's golden vectors on this device, every level", cmd_verify)
    r = bundle_cmd("run", "time every level (or one) on random input", cmd_run)
    r.add_argument("--level", type=int, default=None)
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--runs", type=int, default=100)
    s = sub.add_parser("restore", help="put back clocks saved by a process that died (SIGKILL, power cut)")
    s.add_argument("--state-dir", default=None, help="where the runtime keeps its state file (default: its own)")
    s.add_argument("--board", default=None, help="board name or board JSON file that says what may be written "
                                                 "(default: detected); the state file is never trusted for it")
    s.add_argument("--sysfs-root", default="/", help="root of the sysfs tree (default /; a fake tree in tests)")
    s.set_defaults(func=cmd_restore)
    for name, module, help_ in TOOLS:
        t = sub.add_parser(name, help=help_, description=help_)
        t.set_defaults(func=_lazy(module))
        if name in argv:
            __import__(module, fromlist=["add_arguments"]).add_arguments(t)
    return p


def _lazy(module):
    def run(args):
        return __import__(module, fromlist=["main"]).main(args)
    return run


def main(argv=None):
    from runtime.cli import run_cli
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 2
    return run_cli(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
