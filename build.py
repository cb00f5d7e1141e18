#!/usr/bin/env python3
"""dynn: train width-switchable grouped CNNs and compile them into one engine per embedded target.

  python build.py train --data DIR                 train the default grouped-incremental model
  python build.py --target host-cpu                compile artifacts/default into artifacts/host-cpu/
  python build.py --list-targets                   the boards this build knows
  python build.py info [CHECKPOINT]                a checkpoint's levels (params, MACs, accuracy)
  python build.py bench | demo | profile           host tools over the runtime (bench/)

On a board (or here): python -m runtime info|verify|run|profile|doctor BUNDLE; python board_scripts/deploy.py
--host HOST BUNDLE copies a bundle and the runtime to a board, builds its engine there and verifies it.

Every command has --help. Bad input prints one line "error: ..." and exits 1 (2 for a mistyped command line).
"""
import argparse
import os
import sys

from compile.validate import MAX_BATCH, TFLITE_PRECISIONS  # torch-free, so --help stays fast

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CKPT = os.path.join("artifacts", "default", "model.safetensors")


def cmd_train(args):
    from compile.validate import check_checkpoint_out, check_recipe
    check_recipe(vars(args))  # every numeric flag, before torch is imported or anything is written
    from compile.recipes import KEYS, load_recipe, merge
    chosen = merge(load_recipe(args.recipe), {k: getattr(args, k) for k in KEYS}, args.scheme)
    from compile.data import load_dataset
    from compile.train import Trainer, default_config
    cfg = default_config(scheme=args.scheme, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         input_size=args.input_size, threads=args.threads, distill=args.distill, cutout=args.cutout,
                         label_smoothing=args.label_smoothing, weight_decay=args.weight_decay, device=args.device,
                         only=args.only, **chosen)
    out = args.out or {"grouped": os.path.join("artifacts", "default"),
                       "dense": os.path.join("artifacts", "baselines", "dense"),
                       "static": os.path.join("artifacts", "baselines", "static")}[cfg["scheme"]]
    run_dir = args.run_dir or os.path.join("runs", os.path.basename(os.path.normpath(out)) + "-" + cfg["scheme"])
    check_checkpoint_out(out, cfg["scheme"], int(cfg["groups"]))  # before hours of training, not after
    data = load_dataset(args.data, args.dataset, cfg["input_size"], args.channels, args.cache_dir, args.cache)
    print("data: %s, %d train / %d test images, %d classes; run dir %s; output %s" % (
        data.kind, len(data.train_x), len(data.test_x), len(data.classes), run_dir, out))
    if args.teacher is None:  # the recipe's teacher, not the user's: on other data, train without it
        from compile.teacher import drop_unfit_recipe_teacher
        cfg = drop_unfit_recipe_teacher(cfg, data)
    path = Trainer(cfg, data, run_dir, out, progress=not args.no_progress).run()
    print("wrote %s" % path)
    return 0


def cmd_heads(args):
    from compile.validate import check_checkpoint_out
    from compile.checkpoint import resolve
    out = args.out or os.path.dirname(os.path.abspath(resolve(args.checkpoint)))
    check_checkpoint_out(out, "grouped", None)
    from compile.level_heads import add_heads
    print("wrote %s" % add_heads(args.checkpoint, args.data, out))
    return 0


def _print_layers(spec, size, chans, classes, widths):
    from compile.arch import layer_table
    for w in sorted(set(widths)):
        print("\nlayers of one group path at width %g (per image, %dx%dx%d input):" % (w, chans, size, size))
        print("%-11s %5s %5s %6s %6s %5s %9s %10s" % ("layer", "in", "out", "kernel", "stride", "HxW", "params", "MACs"))
        for r in layer_table(spec, size, chans, classes, w):
            print("%-11s %5d %5d %6s %6d %5d %9d %10d" % (r["layer"], r["in"], r["out"], r["kernel"] or "-",
                                                         r["stride"], r["hw"], r["params"], r["macs"]))


def cmd_archs(args):
    from compile.arch import builtin_names, level_costs, load_spec
    print("%-16s %9s %8s  %s" % ("architecture", "params", "MMACs", "(one group path at width 1, %dx%d input)"
                                 % (args.input_size, args.input_size)))
    for name in builtin_names():
        spec = load_spec(name)
        c = level_costs(spec, [1.0], args.input_size, args.channels, args.classes)[0]
        print("%-16s %9d %8.2f  %s" % (name, c["params"], c["macs"] / 1e6, spec["description"].split(". ")[0]))
        if args.layers:
            _print_layers(spec, args.input_size, args.channels, args.classes, [1.0])
            print()
    print("\nTrain one with: python build.py train --arch NAME (or --arch PATH.json: docs/architectures.md)")
    return 0


def cmd_info(args):
    from compile.validate import check_recipe
    check_recipe(vars(args))  # --input-size, --classes
    from compile.arch import spec_of, widths_of
    from compile.checkpoint import load_checkpoint
    if args.archs:
        return cmd_archs(args)
    model, meta = load_checkpoint(args.checkpoint)
    print("%s: %s, %s, %d groups, %d classes, input %dx%d" % (
        args.checkpoint, meta["scheme"], meta["arch"], meta["groups"], meta["num_classes"],
        meta["input"]["size"], meta["input"]["size"]))
    print("group widths %s; combine %s" % (",".join("%g" % w for w in widths_of(meta)), meta.get("combine", "mean")))
    print("%-6s %10s %10s %8s %9s  %s" % ("level", "params", "MMACs", "x L1", "test acc", "weights"))
    m1 = float(meta["levels"][0]["macs"])
    for lv, w in zip(meta["levels"], model.level_weights[meta["levels"][0]["level"] - 1:]):
        print("%-6d %10d %10.2f %8.2f %8.2f%%  %s" % (lv["level"], lv["params"], lv["macs"] / 1e6, lv["macs"] / m1,
                                                     100 * lv["test_accuracy"], " ".join("%.3f" % v for v in w)))
    if args.layers:
        _print_layers(spec_of(meta), meta["input"]["size"], meta["input"]["channels"], meta["num_classes"],
                      widths_of(meta))
    return 0


def cmd_list_targets(args):
    from compile.targets import list_targets
    for t in list_targets():
        print("%-9s %-8s batch %-6s %s" % (t["name"], t["engine"], "/".join(map(str, t["batch_sizes"])),
                                          t["description"]))
    return 0


def cmd_build(args):
    import shutil
    from compile.errors import UserError
    from compile.targets import get_target
    from compile.validate import check_replaceable, parse_batch_sizes
    # refused here in a fraction of a second, before the compiler (and torch) is imported; build_bundle
    # checks the same again for its other callers
    from compile.checkpoint import read_meta
    batch = parse_batch_sizes(args.batch_sizes)
    target = get_target(args.target)
    out = os.path.abspath(args.out or os.path.join("artifacts", target["name"]))
    check_replaceable(out)
    read_meta(args.checkpoint)
    from compile.bundle import build_bundle
    print("building %s from %s" % (args.target, args.checkpoint))
    precision = args.precision or target["tflite_precision"]
    if "int8" in precision and target["engine"] == "tflite" and not args.data:  # before minutes of export
        raise UserError("target %s carries int8 levels (precision %s), calibrated on training images: pass "
                        "--data DIR (the set the model was trained on), or --precision fp32"
                        % (target["name"], precision))
    out, man = build_bundle(args.checkpoint, args.target, out, args.data, batch, precision=precision)
    total = sum(f["size"] for f in man["files"].values())
    print("wrote %s: %d files, %.2f MB, %d levels (%s)" % (
        out, len(man["files"]), total / 1e6, len(man["levels"]),
        ", ".join("L%d %.1f%%" % (lv["level"], 100 * lv["test_accuracy"]) for lv in man["levels"])))
    if man["target"]["engine"] == "tensorrt":
        try:
            import tensorrt  # noqa: F401
            have_trt = True
        except ImportError:
            have_trt = False
        if have_trt and shutil.which("nvidia-smi"):
            import subprocess
            return subprocess.call([sys.executable, "-m", "runtime", "trt-build", out], cwd=ROOT)
        print("TensorRT engine: built on the device (engines are tied to the GPU and TensorRT version): "
              "python board_scripts/deploy.py --host NANO %s copies this bundle to the Nano and runs "
              "python3 -m runtime trt-build there" % os.path.relpath(out))
    return 0


def _lazy(module):
    def run(args):
        return __import__(module, fromlist=["main"]).main(args)
    return run


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors (argparse prints usage lines first); exit 2 = usage."""

    def error(self, message):
        self.exit(2, "error: %s; see python %s --help\n" % (message, self.prog))


def build_parser(argv=()):
    p = _Parser(prog="build.py", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("--target", help="compile a bundle for this target (see --list-targets)")
    p.add_argument("--list-targets", action="store_true", help="list the targets this build knows and exit")
    p.add_argument("--checkpoint", default=DEFAULT_CKPT, help="checkpoint to compile (default %(default)s)")
    p.add_argument("--out", metavar="DIR", help="bundle directory (default artifacts/<target>); replaced only "
                                                  "when it is empty or holds a bundle this tool wrote")
    p.add_argument("--data", metavar="DIR", help="take the golden-vector images from this data set's test split "
                                                   "(default: seeded random images)")
    p.add_argument("--precision", choices=TFLITE_PRECISIONS, default=None,
                   help="TFLite precisions the file carries: fp32, int8 or both (int8 is post-training quantized, "
                        "calibrated on 256 training images from --data; default: the target's)")
    p.add_argument("--batch-sizes", metavar="B,B", help="batch sizes the engine carries: distinct, 1 to %d, "
                                                        "including 1 (default: the target's)" % MAX_BATCH)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a grouped model (or a baseline) and write a checkpoint",
                       description="Train incrementally: step k trains group k with groups 1..k-1 frozen. "
                                   "Re-running the same command after an interruption resumes from the last "
                                   "finished epoch.")
    t.add_argument("--data", required=True, metavar="DIR",
                   help="CIFAR-10 python batches (DIR or DIR/cifar-10-batches-py) or an image tree "
                        "DIR/train/<class>/*.jpg + DIR/test/<class>/*.jpg")
    t.add_argument("--dataset", choices=("auto", "cifar10", "image-folder"), default="auto",
                   help="how to read --data (default: auto-detect)")
    t.add_argument("--scheme", choices=("grouped", "dense", "static"), default="grouped",
                   help="grouped: incremental group training (default); dense: Tann et al. 2016 baseline; "
                        "static: one model per width trained from scratch")
    t.add_argument("--recipe", default="default", metavar="NAME|PATH.json",
                   help="the settings to start from: default (the shipped model: vgg-cifar, widths 1,1.5,2,3, "
                        "epochs 10,10,15,20, a shipped teacher), 90-minute (the same cut to 90 minutes here, "
                        "training its own teacher) or paper (four equal alexnet-cifar groups); flags given win "
                        "(compile/recipes/)")
    t.add_argument("--arch", default=None, metavar="NAME|PATH.json",
                   help="group path: a built-in (python build.py info --archs) or a spec file (docs/architectures.md); "
                        "default: the recipe's")
    t.add_argument("--group-widths", default=None, metavar="W,W,..",
                   help="channel multiplier of each group's path, e.g. 1,1,1.5,2 (default: the recipe's)")
    t.add_argument("--combine", choices=("mean", "fitted", "heads"), default=None,
                   help="how level k adds up groups 1..k: mean (1/k), fitted weights (after step k, on a held-out "
                        "10%% of the training set), or heads: fitted weights, then a linear head over the "
                        "features of groups 1..k (compile/level_heads.py; default: the recipe's)")
    t.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="image channels of an image-folder set (default: 1 if its first image is grey, else 3)")
    t.add_argument("--cache-dir", default=os.path.join("runs", "data-cache"), metavar="DIR",
                   help="where a decoded uint8 copy of a large image-folder set is kept (default %(default)s)")
    t.add_argument("--cache", choices=("auto", "always", "never"), default="auto",
                   help="decode the image folder into --cache-dir and memory-map it: auto = when its float copy "
                        "would exceed a quarter of RAM (default auto)")
    t.add_argument("--groups", type=int, default=None, metavar="G", help="number of groups G, 2-8 (default: the recipe's, 4)")
    t.add_argument("--epochs", default=None, metavar="N[,N..]",
                   help="epochs per incremental step, one number or one per step such as 10,10,15,20 (default: the recipe's)")
    t.add_argument("--batch-size", type=int, default=None, metavar="N", help="images per training step (default 128)")
    t.add_argument("--lr", type=float, default=None, metavar="LR", help="OneCycle peak learning rate (default 0.1)")
    t.add_argument("--own-loss-weight", type=float, default=None, metavar="W",
                   help="weight of group k's own loss next to the level-k loss (default: the recipe's)")
    t.add_argument("--distill", type=float, default=None, metavar="W",
                   help="weight of distilling group k from the frozen level k-1 (the ensemble so far; default 0)")
    t.add_argument("--holdout", type=float, default=None, metavar="F",
                   help="fraction of the training set held out to fit level weights and choose the heads' pull "
                        "(default 0.1, at most 5000 images); --combine mean holds nothing out")
    t.add_argument("--teacher", default=None, metavar="CKPT",
                   help="distil every step from this checkpoint's top level (a model trained on the same data, "
                        "e.g. a wider static baseline; default: the recipe's), its logits computed once and cached "
                        "in the run dir; 'none' trains without one")
    t.add_argument("--teacher-epochs", type=int, default=None, metavar="N",
                   help="train the teacher first: the static full-width model of the same family for N epochs, in "
                        "RUN_DIR/teacher (resumable; its time counts in the schedule's)")
    t.add_argument("--teacher-weight", type=float, default=None, metavar="W",
                   help="weight of the teacher's soft targets next to the labels (default 1)")
    t.add_argument("--teacher-temp", type=float, default=None, metavar="T",
                   help="distillation temperature for the teacher (default 4)")
    t.add_argument("--label-smoothing", type=float, default=None, metavar="E", help="label smoothing (default 0.1)")
    t.add_argument("--weight-decay", type=float, default=None, metavar="WD", help="SGD weight decay (default 5e-4)")
    t.add_argument("--cutout", type=int, default=None, metavar="PX",
                   help="cut a PX x PX square out of every training image (default 0: off)")
    t.add_argument("--only", default=None, metavar="K[,K..]",
                   help="--scheme static: train only these widths (width K = groups 1..K trained jointly)")
    t.add_argument("--device", default=None, metavar="DEV",
                   help="torch device to train on: cpu (default) or cuda; the checkpoint is the same format")
    t.add_argument("--input-size", type=int, default=None, metavar="PX", help="square input size; image folders are resized to it (default 32)")
    t.add_argument("--seed", type=int, default=None, metavar="N", help="random seed (default 0)")
    t.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's choice)")
    t.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default artifacts/default, or artifacts/baselines/<scheme>)")
    t.add_argument("--run-dir", default=None, metavar="DIR",
                   help="where resumable state goes (default runs/<out-name>-<scheme>)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar, one line per epoch only")
    t.set_defaults(func=cmd_train)

    # Long-running tools live in their own modules; each exposes add_arguments(parser) and main(args) -> int.
    for name, module, help_ in (
            ("bench", "bench", "measure levels, switching, memory and peers on this machine; write a report"),
            ("demo", "bench.demo", "run CIFAR-10 through the runtime manager while the budget and the load change"),
            ("ablate", "compile.ablation", "train a plan of training variants side by side and tabulate their "
                                           "levels (docs/training.md)"),
            ("profile", "bench.profile_cmd", "profile a bundle's operating points on this machine (the boards "
                                               "run python -m runtime profile BUNDLE)")):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=_lazy(module), module=module)
        if name in argv:  # import a tool's module only when it is asked for: --help stays fast
            __import__(module, fromlist=["add_arguments"]).add_arguments(sp)

    h = sub.add_parser("heads", help="fit per-level heads on a checkpoint trained with --combine fitted",
                       description="Fit level k's linear head over the features of groups 1..k for every level "
                                   "(what --combine heads does after each step) and write the checkpoint again, "
                                   "its levels re-measured on the test split.")
    h.add_argument("checkpoint", help="a grouped checkpoint trained with --combine fitted (.safetensors or its directory)")
    h.add_argument("--data", required=True, metavar="DIR", help="the data set it was trained on")
    h.add_argument("--out", default=None, metavar="DIR", help="output directory (default: the checkpoint's own)")
    h.set_defaults(func=cmd_heads)

    i = sub.add_parser("info", help="print a checkpoint's levels: parameters, MACs and accuracy")
    i.add_argument("checkpoint", nargs="?", default=DEFAULT_CKPT, help="default " + DEFAULT_CKPT)
    i.add_argument("--layers", action="store_true", help="also print the layer table of each group width")
    i.add_argument("--archs", action="store_true", help="list the built-in architectures with their cost")
    i.add_argument("--input-size", type=int, default=32, metavar="PX", help="with --archs: image size (default 32)")
    i.add_argument("--channels", type=int, choices=(1, 3), default=3, help="with --archs: image channels")
    i.add_argument("--classes", type=int, default=10, metavar="N", help="with --archs: number of classes")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None):
    from runtime.cli import run_cli
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if args.list_targets:
            args.func = cmd_list_targets
        elif args.target is not None:
            args.func = cmd_build
        else:
            parser.print_help()
            return 2
    return run_cli(args.func, args, resume_hint="re-run the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
