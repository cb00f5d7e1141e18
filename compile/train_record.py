"""What a training run records: the test accuracy of its levels, the code version it ran, and the readable
summary kept next to a checkpoint (the trainer, `build.py heads` and the bundle writer use them)."""
import json
import os
import subprocess

import torch

import compile
from compile.checkpoint import atomic_write_bytes, umask_mode


def code_version():
    """The package version and the commit (git rev-parse; None outside a checkout or without git)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = None
    return {"package": compile.__version__, "git": rev or None}


EVAL_CHUNK = 500


def _chunks(norm, images, device):
    for i in range(0, len(images), EVAL_CHUNK):
        yield i, norm(images[i:i + EVAL_CHUNK]).to(device).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def frozen_features(model, norm, test_x, frozen, device="cpu"):
    """Features of a GroupedNet's groups 1..frozen on a set, per chunk, for evaluate_levels(known=...): a step's
    frozen groups never change, so each epoch's evaluation needs only the group in training."""
    model.eval()
    return [model.features(x, frozen) for _, x in _chunks(norm, test_x, device)]


@torch.no_grad()
def evaluate_levels(model, norm, test_x, test_y, upto, device="cpu", known=None):
    """Accuracy (fractions) of levels 1..upto on a labelled set, in chunks (the set may be a disk cache).
    `known`: frozen_features of the same set, reused instead of running those groups again."""
    model.eval()
    correct = torch.zeros(upto)
    for n, (i, x) in enumerate(_chunks(norm, test_x, device)):
        outs = model.all_levels(x, upto) if known is None else model.all_levels(x, upto, known[n])
        y = test_y[i:i + EVAL_CHUNK].to(device)
        for k, o in enumerate(outs):
            correct[k] += (o.argmax(1) == y).sum().item()
    return (correct / len(test_x)).tolist()


def _minutes(seconds):
    return "-" if seconds is None else "%.1f min" % (seconds / 60)


def write_summary(meta, path):
    """A short Markdown record of a finished training run, kept next to the checkpoint."""
    t = meta["training"]
    lines = ["# Training summary: %s, %s, %d group(s)" % (meta["scheme"], meta["arch"], meta["groups"]), "",
             "Recipe: `%s`" % json.dumps({k: v for k, v in t["recipe"].items() if k != "arch_spec"}, sort_keys=True),
             "", "Path (one group, width 1): %s" % " -> ".join(
                 b["type"] + ("%d" % b.get("channels", b.get("units", 0)) if ("channels" in b or "units" in b) else "")
                 for b in meta.get("arch_spec", {}).get("blocks", [])), "",
             "Data: %s, %d train / %d test images, fingerprint %s" % (
                 meta["data"]["kind"], meta["data"]["train_images"], meta["data"]["test_images"],
                 meta["data"]["fingerprint"][:16]), ""]
    teacher = t.get("teacher")
    if teacher:
        acc = teacher.get("test_accuracy")
        lines += ["Teacher: %s (%s, %s test, sha256 %s): trained in %s, soft targets in %s; the schedule with "
                  "it %.1f min" % (teacher["path"], teacher["scheme"], "-" if acc is None else "%.2f%%" % (100 * acc),
                                   teacher["sha256"][:16], _minutes(teacher.get("training_seconds")),
                                   _minutes(teacher.get("logits_seconds")), t["schedule_seconds"] / 60), ""]
    lines += ["Wall time: %.1f min in all (%s), torch %s, %d threads" % (
                  t["total_seconds"] / 60, ", ".join("step %s %.1f min" % (k, v / 60)
                                                     for k, v in sorted(t["seconds_per_step"].items())),
                  t["torch"], t["threads"]), "",
              "| level | params | MMACs | test accuracy |", "|---|---|---|---|"]
    for lv in meta["levels"]:
        lines.append("| %d | %d | %.2f | %.2f%% |" % (lv["level"], lv["params"], lv["macs"] / 1e6,
                                                     100 * lv["test_accuracy"]))
    heads = meta.get("level_heads")
    if heads:
        lines += ["", "Level heads (compile/level_heads.py): level k's linear head over the features of groups 1..k, "
                  "fitted after step k; L2 pull towards the plain combination chosen on %d held-out images%s." % (
                      heads["fits"][0]["held_out_images"], "; " + heads["added_by"] if heads.get("added_by") else ""),
                  "", "| level | pull | held-out acc before | after | test acc without head | fit s |",
                  "|---|---|---|---|---|---|"]
        for f, lv in zip(heads["fits"], meta["levels"]):
            lines.append("| %d | %g | %.2f%% | %.2f%% | %s | %s |" % (
                f["level"], f["pull"], 100 * f["held_out_before"], 100 * f["held_out_after"],
                "%.2f%%" % (100 * lv["test_accuracy_without_heads"]) if "test_accuracy_without_heads" in lv else "-",
                "%.0f" % f["seconds"] if "seconds" in f else "-"))
    lines += ["", "Per epoch (test accuracy of every trained level):", "",
              "| step | epoch | loss | train acc | test acc by level | s |", "|---|---|---|---|---|---|"]
    for h in t["history"]:
        lines.append("| %d | %d | %.3f | %.2f%% | %s | %.0f |" % (
            h["step"], h["epoch"], h["loss"], 100 * h["train_acc"],
            " / ".join("%.2f" % (100 * a) for a in h["test_acc"]), h["seconds"]))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode(), umask_mode())
