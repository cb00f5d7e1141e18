"""`python build.py bench`: the numbers that show where this project stands, measured side by side in one run.

Every comparison is a ratio of things timed in the same process, interleaved round by round; nothing is
compared with a number from another day. Writes OUT/bench.json, OUT/report.md and PNG plots; --publish
also copies them to docs/bench/ (the report the README links to).

  python build.py bench --quick            smoke mode (CI): batch 1, few rounds, about 2 minutes
  python build.py bench --publish          full run (about 5-15 minutes on 2 idle cores), then refresh docs/bench/

Modules, one job each: refs (single-level, dense and static reference files), engines (the callables timed),
latency (interleaved timing), switching, memory (+ memory_worker, fresh processes), peak (GEMM limit),
parallel (groups split over CPUs, issue 14), precision (int8 against float32, issue 13), accuracy, manager, stats
(pure arithmetic), run (orchestration), report and plots.
"""
import os

DEFAULT_CKPT = os.path.join("artifacts", "default", "model.safetensors")
DEFAULT_DENSE = os.path.join("artifacts", "baselines", "dense", "model.safetensors")
DEFAULT_STATIC = os.path.join("artifacts", "baselines", "static")
PUBLISH_DIR = os.path.join("docs", "bench")


# (flag, metavar, default, help): the benchmark's options, all but --quick and --publish taking a value
OPTIONS = (
    ("--target", None, "host-cpu",
     "bundle target to measure on this machine; needs a TFLite engine (default %(default)s)"),
    ("--checkpoint", None, DEFAULT_CKPT, "the grouped model (default %(default)s)"),
    ("--bundle", "DIR", None, "bundle built from --checkpoint (default: artifacts/<target> when it was built from "
                              "it, else one is built into the work folder)"),
    ("--out", "DIR", None, "where bench.json, report.md and the plots go (default bench-out/<target>)"),
    ("--work", "DIR", None, "cache of converted reference models (default OUT/work)"),
    ("--threads", "N,N", None, "thread counts to measure (default: 1 and this machine's usable cores)"),
    ("--data", "DIR", None, "re-measure every accuracy through the engines on this CIFAR-10 test split "
                            "(default: the accuracies the checkpoints recorded)"),
    ("--dense", "CKPT", DEFAULT_DENSE,
     "dense-incremental baseline checkpoint (default %(default)s; missing is reported)"),
    ("--static-dir", "DIR", DEFAULT_STATIC, "static baselines, DIR/width-K/model.safetensors (default %(default)s)"),
    ("--demo", "PATH", None, "demo.json (or its directory) of `python build.py demo` (default: demo-out/, then "
                             "docs/demo/)"),
    ("--split", "JSON", None, "placement the groups-in-parallel section times against one core and two threads "
                              "(bench/parallel.py), e.g. '{\"cpu:0\": [1, 2], \"cpu:1\": [3, 4]}' (default: the "
                              "full level's groups halved over the first two usable CPUs)"),
)


def add_arguments(p):
    for flag, metavar, default, help_ in OPTIONS:
        p.add_argument(flag, metavar=metavar, default=default, help=help_)
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: batch 1 only, few rounds, small accuracy subset (about 2 minutes)")
    p.add_argument("--publish", action="store_true",
                   help="also copy bench.json, report.md and the plots to %s" % PUBLISH_DIR)


def main(args):
    import sys
    if "torch" not in sys.modules:
        # Idle OpenMP threads of PyTorch must sleep, not spin, or they slow whatever is timed next.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench.run import run_bench
    return run_bench(args)
