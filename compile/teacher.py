"""Distillation from a trained teacher (`build.py train --teacher CKPT`, issue 12).

The teacher is any checkpoint of this project trained on the same data (usually a static model of the
same family, wider than the student's levels): its top level's logits become soft targets. In step k the
level-k output and group k alone each learn the labels plus `teacher_weight` x T^2 x KL(teacher || output)
at temperature T (Hinton et al. 2015). Group 1 is a complete network with no earlier group to learn from,
so this is the one lever that lifts level 1 above a static model of its own width.

The teacher runs once per training image, as is and flipped, before the first step; its logits are cached
in the run directory under the teacher's sha256, so a resumed run or a later step pays nothing. A training
batch takes the flipped or plain row to match its own random flip; the random crop shifts the image by at
most 1/8 of its side, and the teacher's prediction of the uncropped image stands in for it (running the
teacher per batch would cost more than training the narrow groups).
"""
import os
import time

import torch
import torch.nn.functional as F

from compile.checkpoint import atomic_save_tensors, load_checkpoint, read_meta, resolve, sha256_file
from compile.data import Normalizer
from compile.errors import UserError

TEACHER_T = 4.0  # the usual temperature for a teacher several points better than its student


def distill_loss(student_logits, teacher_logits, temperature):
    """T^2 x KL(softmax(teacher / T) || softmax(student / T)), batch mean: the Hinton et al. soft-target
    term, scaled by T^2 so its gradient stays comparable to the cross-entropy's whatever T is."""
    t = float(temperature)
    target = F.softmax(teacher_logits / t, 1)
    return t * t * F.kl_div(F.log_softmax(student_logits / t, 1), target, reduction="batchmean")


class Teacher(object):
    def __init__(self, path, model, meta, digest):
        self.path, self.model, self.meta, self.sha256 = path, model, meta, digest
        self.logits_seconds = None  # set by teacher_logits: what computing the soft targets took

    def seconds(self):
        """What this teacher added to a student's schedule: its training and the soft targets."""
        return (self.meta.get("training", {}).get("total_seconds") or 0) + (self.logits_seconds or 0)

    def record(self):
        """What a checkpoint records of its teacher (the run's recipe keeps the sha256 only); its training
        and the soft targets are part of what the student's schedule cost."""
        top = self.meta["levels"][-1]
        return {"path": _shown(self.path), "sha256": self.sha256, "scheme": self.meta["scheme"],
                "test_accuracy": top.get("test_accuracy"), "macs": top.get("macs"),
                "training_seconds": self.meta.get("training", {}).get("total_seconds"),
                "logits_seconds": self.logits_seconds}


def _shown(path):
    """Repo-relative inside the checkout (a checkpoint must not record this machine's layout), else absolute."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full = os.path.abspath(path)
    return os.path.relpath(full, root) if full.startswith(root + os.sep) else full


def _mismatch(path, meta, data, input_size):
    """Why a teacher cannot teach this run (None: it can)."""
    fp = meta.get("data", {}).get("fingerprint")
    if fp != data.fingerprint:
        return "%s was trained on other data (fingerprint %s, this data set %s)" % (
            path, (fp or "none")[:16], data.fingerprint[:16])
    want = (len(data.classes), int(input_size), int(data.train_x.shape[1]))
    got = (int(meta["num_classes"]), int(meta["input"]["size"]), int(meta["input"]["channels"]))
    if got != want:
        return "%s has %d classes, input %d px, %d channel(s); this run needs %d, %d, %d" % ((path,) + got + want)
    return None


def load_teacher(path, data, input_size):
    """The teacher checkpoint, refused in one line when it was trained on other data or another task."""
    path = resolve(path)
    model, meta = load_checkpoint(path)
    why = _mismatch(path, meta, data, input_size)
    if why:
        raise UserError("--teacher %s: train a teacher on this --data (python build.py train --scheme static "
                        "--only G) or pass --teacher none" % why)
    return Teacher(path, model, meta, sha256_file(path))


def drop_unfit_recipe_teacher(cfg, data, log=print):
    """A recipe's teacher serves the data set it was trained on: on other data the run trains without it and
    says so, where a teacher given by --teacher is refused (compile/recipes/default.json names CIFAR-10's)."""
    if not cfg.get("teacher"):
        return cfg
    path = resolve(cfg["teacher"])  # the sidecar says enough: the trainer loads and checks the weights once
    why = _mismatch(path, read_meta(path), data, cfg["input_size"]) if os.path.isfile(path) else \
        "%s does not exist" % path
    if why:
        log("the recipe's teacher %s: training without a teacher (--teacher CKPT gives one)" % why)
        cfg = dict(cfg, teacher=None)
    return cfg


@torch.no_grad()
def teacher_logits(teacher, data, run_dir, device="cpu", log=print):
    """[2, N, classes] float32: the teacher's logits for every training image, plain (0) and flipped (1),
    computed once and cached in RUN_DIR."""
    cache = os.path.join(run_dir, "teacher-%s.safetensors" % teacher.sha256[:16])
    n, classes = len(data.train_x), int(teacher.meta["num_classes"])
    if os.path.isfile(cache):
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(cache, "pt") as f:
                cached, seconds = f.get_tensor("logits"), float((f.metadata() or {}).get("seconds", "nan"))
        except (SafetensorError, OSError, ValueError, KeyError):
            cached = seconds = None
        if cached is not None and tuple(cached.shape) == (2, n, classes):
            teacher.logits_seconds = None if seconds != seconds else seconds  # nan: not recorded
            return cached
        log("teacher cache %s is unreadable or of another shape; computing it again" % cache)
    t0 = time.time()
    inp = teacher.meta["input"]
    norm = Normalizer(inp["mean"], inp["std"])  # the teacher's own normalisation, as it was trained
    model = teacher.model.to(device).eval()
    out = torch.empty(2, n, classes)
    for i in range(0, n, 500):
        x = norm(data.train_x[i:i + 500]).to(device).contiguous(memory_format=torch.channels_last)
        out[0, i:i + 500] = model(x).float().cpu()
        out[1, i:i + 500] = model(x.flip(3)).float().cpu()
    teacher.model.to("cpu")
    teacher.logits_seconds = time.time() - t0
    os.makedirs(run_dir, exist_ok=True)
    atomic_save_tensors({"logits": out}, cache, metadata={"teacher_sha256": teacher.sha256,
                                                          "data_fingerprint": data.fingerprint,
                                                          "seconds": "%.3f" % teacher.logits_seconds})
    log("teacher %s: logits of %d training images, plain and flipped, in %.0f s (cached in %s)"
        % (_shown(teacher.path), n, teacher.logits_seconds, cache))
    return out
