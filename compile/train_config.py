"""The settings of a training run (`build.py train` flags over a recipe): their defaults, the checks between
them, and which of them a run directory and a checkpoint record as its recipe."""
import torch

from compile.arch import load_spec, parse_widths
from compile.combine import COMBINES
from compile.errors import UserError
from compile.teacher import TEACHER_T
from compile.validate import check_recipe, parse_epochs

RECIPE_KEYS = ("scheme", "arch", "groups", "epochs", "batch_size", "lr", "momentum", "weight_decay",
               "label_smoothing", "own_loss_weight", "distill", "cutout", "seed", "input_size", "group_widths",
               "combine", "arch_spec")  # the spec itself: an edited spec file must not resume into the old tensors


def default_config(**over):
    cfg = dict(scheme="grouped", arch="alexnet-cifar", groups=4, epochs=10, batch_size=128, lr=0.1,
               momentum=0.9, weight_decay=5e-4, label_smoothing=0.1, own_loss_weight=1.0, seed=0,
               input_size=32, threads=None, group_widths=None, combine="mean", distill=0.0, cutout=0,
               device="cpu", only=None, teacher=None, teacher_weight=1.0, teacher_temp=TEACHER_T, teacher_epochs=None,
               holdout=None)
    for k, v in over.items():
        if v is not None:
            cfg[k] = v
    if not 2 <= int(cfg["groups"]) <= 8 and cfg["scheme"] != "static":
        raise UserError("--groups must be between 2 and 8, got %s" % cfg["groups"])
    if not 1 <= int(cfg["groups"]) <= 8:
        raise UserError("--groups must be between 1 and 8, got %s" % cfg["groups"])
    cfg["arch_spec"] = load_spec(cfg["arch"])  # a built-in name or a spec file; one-line error if malformed
    # static: width-k is a GroupedNet of groups 1..k at these widths, trained jointly from scratch
    cfg["group_widths"] = parse_widths(cfg["group_widths"], int(cfg["groups"]))
    cfg["epochs"] = parse_epochs(cfg["epochs"], int(cfg["groups"]))
    if cfg["only"] is not None:
        try:
            cfg["only"] = sorted(set(int(v) for v in str(cfg["only"]).split(",")))
        except ValueError:
            cfg["only"] = [0]
        if cfg["scheme"] != "static" or not all(1 <= k <= int(cfg["groups"]) for k in cfg["only"]):
            raise UserError("--only takes static widths from 1 to --groups (%s), with --scheme static; got %s"
                            % (cfg["groups"], over.get("only")))
    cfg["device"] = _device(cfg["device"])
    if cfg["combine"] not in COMBINES:
        raise UserError("--combine must be one of %s, got %r" % (", ".join(COMBINES), cfg["combine"]))
    if cfg["combine"] != "mean" and cfg["scheme"] == "static":
        raise UserError("--combine %s needs incremental groups (--scheme grouped or dense)" % cfg["combine"])
    if cfg["combine"] == "heads" and cfg["scheme"] != "grouped":
        raise UserError("--combine heads needs --scheme grouped (a level head reads each group path's features); "
                        "use --combine fitted")
    if cfg["teacher"] and cfg["teacher_epochs"]:
        raise UserError("--teacher and --teacher-epochs both name a teacher; give the checkpoint, or the epochs to "
                        "train one in the run dir")
    if cfg["teacher_epochs"] and cfg["scheme"] == "static":
        raise UserError("--teacher-epochs trains the static full-width model as a teacher for incremental groups; "
                        "a static baseline takes --teacher CKPT")
    return check_recipe(cfg)


def _device(name):
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise UserError("--device must be cpu or cuda (cuda:N), got %r" % (name,))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device %s: this torch (%s) sees no CUDA GPU; train with --device cpu"
                        % (name, torch.__version__))
    return str(dev)
