"""Incremental group training, and the two baselines, with resumable per-epoch state.

Schemes (one code path, same data, recipe and epochs):
  grouped  step k trains group k of a GroupedNet; groups 1..k-1 are frozen (no grad, eval-mode BN),
           so level k-1 stays bit-for-bit what it was. Loss: the level-k output plus group k on its own
           (naive residual training leaves later groups useless: ../shared/docs/measured.md).
  dense    the same steps on a DenseIncrementalNet (Tann et al. 2016): new channels read old ones.
  static   a GroupedNet of each width 1..G trained jointly from scratch, one after the other.

State lives in RUN_DIR (state.safetensors + state.json, rewritten atomically after every epoch), so
re-running the same command after a kill continues from the last finished epoch.
"""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from compile.arch import layer_table
from compile.checkpoint import atomic_save_tensors, atomic_write_bytes, save_checkpoint, umask_mode
from compile.data import Normalizer, augment, channel_stats
from compile.errors import UserError
from compile.combine import fit_level_weights, holdout_split
from compile.level_heads import fit_level_head, head_record
from compile.model import GroupedNet, build_model, count_macs, count_params
from compile.teacher import distill_loss, load_teacher, teacher_logits
from compile.train_config import RECIPE_KEYS, default_config
from compile.train_record import code_version, evaluate_levels, frozen_features, write_summary
from compile.validate import check_loss, read_run_state, read_run_tensors, restore_run_weights
from runtime.cli import utc_now

KD_T = 2.0  # distillation temperature (Hinton et al. 2015's usual range)


def step_epochs(cfg, stage):
    e = cfg["epochs"]
    return e[stage - 1] if isinstance(e, list) else int(e)


def cutout(x, size, gen):
    """Zero one random size x size square per image (DeVries & Taylor 2017), batched; after normalisation,
    so the square is the data mean."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=gen)
    cx = torch.randint(0, w, (n,), generator=gen)
    dy = torch.arange(h)[None, :] - cy[:, None] + size // 2  # 0..size-1 inside the square
    dx = torch.arange(w)[None, :] - cx[:, None] + size // 2
    inside_y = ((dy >= 0) & (dy < size))[:, None, :, None]
    inside_x = ((dx >= 0) & (dx < size))[:, None, None, :]
    return x.masked_fill(inside_y & inside_x, 0.0)


def one_cycle_lr(it, total, max_lr, pct=0.3, div=25.0, final_div=1e4):
    """OneCycle (cosine) learning rate as a pure function of the iteration, so resuming needs no state."""
    up = max(1, int(total * pct))
    lo, end = max_lr / div, max_lr / div / final_div
    if it < up:
        return lo + (max_lr - lo) * (1 - math.cos(math.pi * it / up)) / 2
    t = (it - up) / max(1, total - up)
    return end + (max_lr - end) * (1 + math.cos(math.pi * t)) / 2


def _stage_seed(seed, stage, epoch=None):
    return seed * 1000003 + stage * 1009 + (0 if epoch is None else epoch + 1) * 7919


class Trainer(object):
    def __init__(self, cfg, data, run_dir, out_dir, log=print, progress=True):
        self.cfg, self.data, self.run_dir, self.out_dir = cfg, data, run_dir, out_dir
        self.log, self.progress = log, progress
        self.G = int(cfg["groups"])
        self.device = torch.device(cfg.get("device") or "cpu")
        self.channels = int(data.train_x.shape[1])
        # --combine fitted holds a fixed slice of the training set out of training to fit level weights on
        self.train_idx, self.hold_idx = holdout_split(data, cfg["combine"], cfg["seed"], cfg.get("holdout"))
        mean, std = channel_stats(data.train_x)
        self.norm_stats = (mean, std)
        self.norm = Normalizer(mean, std)
        self.num_classes = len(data.classes)
        self.teacher = load_teacher(cfg["teacher"], data, cfg["input_size"]) if cfg.get("teacher") else None
        self._known = None  # (model, step, the frozen groups' test features): see evaluate()
        self.soft = None  # the teacher's cached logits, [2 (plain, flipped), N, classes], read at the run's start

    # ---- run-dir state ---------------------------------------------------------------------------
    def _state_paths(self):
        return os.path.join(self.run_dir, "state.json"), os.path.join(self.run_dir, "state.safetensors")

    def _recipe(self):
        rec = {k: self.cfg[k] for k in RECIPE_KEYS}
        # the keys added since (held-out fraction, teacher) only when given, so run dirs and checkpoints from
        # before them keep their recipe
        if self.cfg.get("holdout") is not None:
            rec["holdout"] = self.cfg["holdout"]
        if self.teacher is not None:  # the teacher by content: a retrained file at the same path is another run
            rec.update(teacher=self.teacher.sha256, teacher_weight=self.cfg["teacher_weight"],
                       teacher_temp=self.cfg["teacher_temp"])
            if self.cfg["teacher_epochs"]:
                rec["teacher_epochs"] = self.cfg["teacher_epochs"]
        return rec

    def _own_teacher(self):
        """--teacher-epochs N: the static full-width model of this run's family (groups 1..G at the run's
        widths, trained jointly, the same settings otherwise) trained first in RUN_DIR/teacher, resumable like
        any run and reused once finished; its time counts in the schedule's."""
        cfg, d = self.cfg, os.path.join(self.run_dir, "teacher")
        path = os.path.join(d, "width-%d" % self.G, "model.safetensors")
        if not os.path.isfile(path):
            tcfg = default_config(
                scheme="static", arch=cfg["arch"], groups=self.G, group_widths=cfg["group_widths"],
                epochs=cfg["teacher_epochs"], only=str(self.G), **{k: cfg[k] for k in (
                    "batch_size", "lr", "momentum", "weight_decay", "label_smoothing", "seed", "input_size",
                    "threads", "cutout", "device")})
            self.log("training the teacher: the static width-%d model, %d epochs, in %s"
                     % (self.G, cfg["teacher_epochs"], d))
            Trainer(tcfg, self.data, os.path.join(d, "run"), d, log=self.log, progress=self.progress).run()
        return path

    def _load_state(self):
        jpath, tpath = self._state_paths()
        if not os.path.isfile(jpath):
            return {"recipe": self._recipe(), "data": self.data.fingerprint, "stage": 1, "epoch": 0,
                    "history": [], "stage_seconds": {}, "done": []}, None
        st = read_run_state(jpath, self.run_dir)
        mine, theirs = self._recipe(), st.get("recipe") or {}
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if theirs.get(k) != mine.get(k))
            raise UserError("run directory %s was started with different settings (%s); pass the same flags "
                            "to resume, or a new --run-dir" % (self.run_dir, ", ".join(diff)))
        if st.get("data") != self.data.fingerprint:
            raise UserError("run directory %s was started on other data; pass the same --data or a new --run-dir"
                            % self.run_dir)
        tensors = None
        if os.path.isfile(tpath):
            tensors = read_run_tensors(tpath, self.run_dir)
        return st, tensors

    def _save_state(self, st, model, opt):
        os.makedirs(self.run_dir, exist_ok=True)
        jpath, tpath = self._state_paths()
        tensors = {"model." + k: v.cpu() for k, v in model.state_dict().items()}
        names = {id(p): n for n, p in model.named_parameters()}
        for group in opt.param_groups:
            for p in group["params"]:
                buf = opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    tensors["momentum." + names[id(p)]] = buf.cpu()
        atomic_save_tensors(tensors, tpath)
        atomic_write_bytes(jpath, (json.dumps(st, indent=1) + "\n").encode(), umask_mode())

    # ---- models per stage ------------------------------------------------------------------------
    def _new_model(self, stage):
        torch.manual_seed(_stage_seed(self.cfg["seed"], stage if self.cfg["scheme"] == "static" else 0))
        static = self.cfg["scheme"] == "static"
        groups = stage if static else self.G
        widths = self.cfg["group_widths"][:groups]
        model = build_model(self.cfg["scheme"], self.cfg["arch_spec"], groups, self.num_classes, self.cfg["input_size"],
                            self.channels, widths, level_heads=self.cfg["combine"] == "heads")
        return model.to(self.device, memory_format=torch.channels_last)

    def _trainable(self, model, stage):
        if self.cfg["scheme"] == "static":
            return list(model.parameters())
        for p in model.parameters():
            p.requires_grad_(False)
        params = list(model.group_parameters(stage))
        for p in params:
            p.requires_grad_(True)
        return params

    def _set_modes(self, model, stage):
        model.train()
        if self.cfg["scheme"] != "static":
            for g in range(1, stage):
                for m in model.group_modules(g):
                    m.eval()  # frozen BatchNorm keeps its running statistics bit-for-bit

    def _soft_targets(self, idx, flip):
        if self.soft is None:
            return None
        return self.soft[flip.long(), idx].to(self.device)

    def _with_teacher(self, loss, logits, soft):
        if soft is None:
            return loss
        return loss + self.cfg["teacher_weight"] * distill_loss(logits, soft, self.cfg["teacher_temp"])

    def _loss(self, model, x, y, stage, soft=None):
        ls = self.cfg["label_smoothing"]
        if isinstance(model, GroupedNet):
            with torch.no_grad():
                before = [model.groups[g](x) for g in range(stage - 1)]
            own = model.groups[stage - 1](x)
        else:
            contrib = model.group_contributions(x, stage)
            before, own = [c.detach() for c in contrib[:-1]], contrib[-1]
        frozen = sum(before) if before else 0
        out = (frozen + own) * model.level_scale(stage)
        lam = self.cfg["own_loss_weight"] if stage > 1 else 0.0
        loss = self._with_teacher(F.cross_entropy(out, y, label_smoothing=ls), out, soft)
        if lam:
            own_loss = self._with_teacher(F.cross_entropy(own, y, label_smoothing=ls), own, soft)
            loss = (loss + lam * own_loss) / (1 + lam)
        kd = self.cfg["distill"] if stage > 1 else 0.0
        if kd:  # group k also learns the soft predictions of the frozen level k-1 (the ensemble so far)
            with torch.no_grad():  # level k-1 as it ships: its own combination weights
                ensemble = model.combine(before, stage - 1)
            loss = loss + kd * distill_loss(own, ensemble, KD_T)
        return loss, out

    def evaluate(self, model, upto):
        """Test accuracy of levels 1..upto (fractions). In step `upto` of the grouped scheme groups 1..upto-1 are
        frozen, so their test features are computed at the step's first evaluation and reused after it."""
        if self.cfg["scheme"] != "grouped" or upto < 2:
            return evaluate_levels(model, self.norm, self.data.test_x, self.data.test_y, upto, self.device)
        if self._known is None or self._known[0] is not model or self._known[1] != upto:
            self._known = (model, upto, frozen_features(model, self.norm, self.data.test_x, upto - 1, self.device))
        return evaluate_levels(model, self.norm, self.data.test_x, self.data.test_y, upto, self.device,
                               known=self._known[2])

    # ---- the run ---------------------------------------------------------------------------------
    def run(self):
        cfg = self.cfg
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg["threads"]))
        if cfg["teacher_epochs"] and self.teacher is None:
            self.teacher = load_teacher(self._own_teacher(), self.data, cfg["input_size"])
        st, tensors = self._load_state()
        model = None
        if tensors is not None and st["stage"] <= self.G:
            model = self._new_model(st["stage"])
            restore_run_weights(model, tensors, self._state_paths()[1], self.run_dir)
        elif cfg["scheme"] != "static" and tensors is not None:
            model = self._new_model(self.G)
            restore_run_weights(model, tensors, self._state_paths()[1], self.run_dir)
        if model is not None and st.get("level_weights"):
            model.level_weights = st["level_weights"]  # weights fitted by the steps already finished
        if model is not None and getattr(model, "level_heads", None) is not None:
            model.heads_ready = [k in st["done"] for k in range(1, self.G + 1)]  # their tensors are in the state
        if self.teacher is not None and st["stage"] <= self.G:
            self.soft = teacher_logits(self.teacher, self.data, self.run_dir, self.device, self.log)
        if st["stage"] > 1 or st["epoch"] > 0:
            self.log("resuming %s from step %d, epoch %d (run dir %s)" % (cfg["scheme"], st["stage"], st["epoch"],
                                                                        self.run_dir))
        n = len(self.data.train_x) if self.train_idx is None else len(self.train_idx)
        steps_per_epoch = n // cfg["batch_size"]  # drop the ragged last batch: same cost every epoch
        if steps_per_epoch < 1:
            raise UserError("the training set has %d images, fewer than one batch of %d; lower --batch-size"
                            % (n, cfg["batch_size"]))
        for stage in range(st["stage"], self.G + 1):
            if cfg["scheme"] == "static" and cfg.get("only") and stage not in cfg["only"]:
                continue  # a static width asked not to be trained (each width is its own model)
            epochs = step_epochs(cfg, stage)
            total_it = steps_per_epoch * epochs
            if model is None or (cfg["scheme"] == "static" and st["epoch"] == 0):
                model = self._new_model(stage)
            params = self._trainable(model, stage)
            opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=True,
                                  weight_decay=cfg["weight_decay"])
            if tensors is not None and st["epoch"] > 0:
                names = dict(model.named_parameters())
                for k, v in tensors.items():
                    if k.startswith("momentum.") and names[k[9:]].requires_grad:
                        opt.state[names[k[9:]]]["momentum_buffer"] = v.clone().to(self.device)
            tensors = None
            t_stage = time.time() - st["stage_seconds"].get(str(stage), 0.0)
            for epoch in range(st["epoch"], epochs):
                t0 = time.time()
                self._set_modes(model, stage)
                gen = torch.Generator().manual_seed(_stage_seed(cfg["seed"], stage, epoch))
                perm = torch.randperm(n, generator=gen)
                bar = tqdm(range(steps_per_epoch), desc="%s step %d/%d epoch %d/%d" % (
                    cfg["scheme"], stage, self.G, epoch + 1, epochs), leave=False,
                    disable=not (self.progress and sys.stderr.isatty()),  # a pipe or log gets the epoch line only
                    dynamic_ncols=True)
                loss_sum, hits, seen = 0.0, 0, 0
                for i in bar:
                    idx = perm[i * cfg["batch_size"]:(i + 1) * cfg["batch_size"]]
                    idx = idx if self.train_idx is None else self.train_idx[idx]
                    x, flip = augment(self.norm(self.data.train_x[idx]), gen, return_flip=True)
                    if cfg["cutout"]:
                        x = cutout(x, cfg["cutout"], gen)
                    x = x.to(self.device).contiguous(memory_format=torch.channels_last)
                    y = self.data.train_y[idx].to(self.device)
                    lr = one_cycle_lr(epoch * steps_per_epoch + i, total_it, cfg["lr"])
                    for group in opt.param_groups:
                        group["lr"] = lr
                    soft = self._soft_targets(idx, flip)
                    if cfg["scheme"] == "static":
                        out = model(x, stage)
                        loss = self._with_teacher(F.cross_entropy(out, y, label_smoothing=cfg["label_smoothing"]),
                                                  out, soft)
                    else:
                        loss, out = self._loss(model, x, y, stage, soft)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.item() * len(y)
                    check_loss(loss_sum, "step %d epoch %d batch %d" % (stage, epoch + 1, i + 1), self.run_dir)
                    hits += (out.argmax(1) == y).sum().item()
                    seen += len(y)
                    if i % 20 == 0:
                        bar.set_postfix(loss="%.3f" % (loss_sum / seen), acc="%.3f" % (hits / seen))
                bar.close()
                accs = self.evaluate(model, stage)
                if cfg["scheme"] == "static":
                    accs = accs[-1:]
                rec = {"step": stage, "epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": hits / seen,
                       "test_acc": accs, "seconds": time.time() - t0}
                st["history"].append(rec)
                lv = "  ".join("L%d %.2f%%" % (k + 1 if cfg["scheme"] != "static" else stage, 100 * a)
                               for k, a in enumerate(accs))
                self.log("%s step %d/%d epoch %2d/%d  loss %.3f  train %.2f%%  test %s  (%.0fs)" % (
                    cfg["scheme"], stage, self.G, epoch + 1, epochs, rec["loss"], 100 * rec["train_acc"],
                    lv, rec["seconds"]))
                st["epoch"] = epoch + 1
                st["stage_seconds"][str(stage)] = time.time() - t_stage
                self._save_state(st, model, opt)
            if cfg["scheme"] == "static":
                self._write_static(model, stage, st)
            else:
                self._fit_level(model, stage, st)
                st["stage_seconds"][str(stage)] = time.time() - t_stage  # the level's fit is part of the step
            st["stage"], st["epoch"] = stage + 1, 0
            st["done"].append(stage)
            self._save_state(st, model, opt)
        if cfg["scheme"] != "static":
            return self._write_final(model, st)
        return os.path.join(self.out_dir, "width-%d" % max(cfg.get("only") or [self.G]), "model.safetensors")

    def _fit_level(self, model, stage, st):
        """Choose level `stage`'s combination weights now, so that later steps never change them."""
        if self.cfg["combine"] != "mean":
            model.level_weights[stage - 1] = fit_level_weights(model, stage, self.norm, self.data.train_x,
                                                               self.data.train_y, self.hold_idx)
            self.log("level %d weights (fitted on %d held-out images): %s" % (
                stage, len(self.hold_idx), " ".join("%.3f" % w for w in model.level_weights[stage - 1])))
        st["level_weights"] = model.level_weights
        if self.cfg["combine"] == "heads":
            rec = fit_level_head(model, stage, self.norm, self.data.train_x, self.data.train_y, self.train_idx,
                                 self.hold_idx)
            st.setdefault("head_fits", []).append(rec)
            self.log("level %d head (L2 pull %g chosen on the held-out images): held-out accuracy %.2f%% -> %.2f%%"
                     % (stage, rec["pull"], 100 * rec["held_out_before"], 100 * rec["held_out_after"]))

    # ---- outputs ---------------------------------------------------------------------------------
    def _meta(self, model, st, levels):
        mean, std = self.norm_stats
        secs = {int(k): v for k, v in st["stage_seconds"].items()}
        return {
            "scheme": self.cfg["scheme"], "arch": model.arch, "arch_spec": model.spec, "groups": model.num_groups,
            "group_widths": model.widths, "num_classes": self.num_classes, "class_names": self.data.classes,
            "combine": self.cfg["combine"], "level_weights": model.level_weights,
            "level_heads": head_record(st["head_fits"]) if self.cfg["combine"] == "heads" else None,
            # the training loss's mean combination; what old readers of uniform checkpoints apply
            "level_scale": [model.level_scale(k) for k in range(1, model.num_groups + 1)],
            "input": {"size": self.cfg["input_size"], "channels": self.channels, "layout": "NCHW",
                      "color": "RGB" if self.channels == 3 else "L",
                      "dtype": "float32", "scale": 1 / 255.0, "mean": mean, "std": std,
                      "formula": "(uint8 / 255 - mean) / std, per channel"},
            "layer_tables": {str(w): layer_table(model.spec, self.cfg["input_size"], self.channels,
                                                 self.num_classes, w) for w in sorted(set(model.widths))},
            "levels": levels,
            "training": {"recipe": self._recipe(), "seconds_per_step": secs,
                         "teacher": self.teacher.record() if self.teacher is not None else None,
                         # what issue 12's training budget counts: the steps, and a teacher's training and soft targets
                         "total_seconds": sum(secs.values()),
                         "schedule_seconds": sum(secs.values()) + (self.teacher.seconds() if self.teacher else 0),
                         "history": st["history"],
                         "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(self.device)},
            "data": {"kind": self.data.kind, "fingerprint": self.data.fingerprint,
                     "train_images": len(self.data.train_x) - len(self.hold_idx),
                     "test_images": len(self.data.test_x), "held_out_images": len(self.hold_idx)},
            "code_version": code_version(),
            "created": utc_now(),
        }

    def _levels(self, model, only=None):
        accs = self.evaluate(model, model.num_groups)
        ks = [only] if only else range(1, model.num_groups + 1)
        m1 = count_macs(model, 1, self.cfg["input_size"], self.channels)
        rows = []
        for k in ks:
            macs = count_macs(model, k, self.cfg["input_size"], self.channels)
            rows.append({"level": k, "params": count_params(model, k), "macs": macs,
                         "macs_ratio": round(macs / float(m1), 4), "test_accuracy": round(accs[k - 1], 6)})
        return rows

    def _write_final(self, model, st):
        levels = self._levels(model)
        model = model.to("cpu", memory_format=torch.contiguous_format)
        meta = self._meta(model, st, levels)
        path = save_checkpoint(model, meta, os.path.join(self.out_dir, "model.safetensors"))
        write_summary(meta, os.path.join(self.out_dir, "training.md"))
        return path

    def _write_static(self, model, width, st):
        levels = self._levels(model, only=width)
        model = model.to("cpu", memory_format=torch.contiguous_format)
        hist = [h for h in st["history"] if h["step"] == width]
        meta = self._meta(model, dict(st, history=hist, stage_seconds={str(width): st["stage_seconds"][str(width)]}),
                          levels)
        meta["static_width"] = width
        d = os.path.join(self.out_dir, "width-%d" % width)
        save_checkpoint(model, meta, os.path.join(d, "model.safetensors"))
        write_summary(meta, os.path.join(d, "training.md"))
        model.to(self.device, memory_format=torch.channels_last)
