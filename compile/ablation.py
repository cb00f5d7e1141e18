"""Training ablations: run a plan of `build.py train` variants side by side and tabulate their levels.

A plan is JSON: {"recipe": "base.json", "runs": [{"name": "vgg-1-1.5-2-3", "args": ["--arch", "vgg-cifar",
...]}, ...]}; each run is one ordinary training command (same code, same resumable state), so a row of the
table is reproduced by its flags alone. "recipe" (a recipe name, or a file beside the plan) is every run's
`--recipe`: the rows stay what they were when the shipped default's recipe changes; a row may name its own.
Runs go `--jobs` at a time, in plan order; a run still going at `--deadline` is stopped and
reported with the epochs it finished, marked partial. Output: OUT/<name>/ (checkpoint, log, run state) and
OUT/ablation.md + OUT/ablation.json.
"""
import json
import os
import subprocess
import sys
import time

from compile.errors import UserError
from runtime.bundle import atomic_write_bytes, atomic_write_json
from runtime.schema import load_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_arguments(p):
    p.add_argument("--data", required=True, metavar="DIR", help="training data, as for build.py train")
    p.add_argument("--plan", required=True, metavar="PLAN.json", help="the runs: {\"runs\": [{\"name\", \"args\"}]}")
    p.add_argument("--out", required=True, metavar="DIR", help="where each run's checkpoint and the table go")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="runs at a time (default 1)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads per run (default 1)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device of every run (default cpu)")
    p.add_argument("--deadline", type=float, default=None, metavar="S",
                   help="stop runs still going after S seconds and report their finished epochs")


def read_plan(path):
    plan = load_json(path, "fix the plan's JSON", UserError)
    runs = plan.get("runs") if isinstance(plan, dict) else None
    ok = isinstance(runs, list) and runs and all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and r["name"].replace("-", "").replace(".", "")
        .replace("_", "").isalnum() and isinstance(r.get("args"), list) and all(isinstance(a, str) for a in r["args"])
        for r in runs)
    if not ok:
        raise UserError("%s must hold {\"runs\": [{\"name\": \"letters-digits\", \"args\": [\"--flag\", \"value\"]}]}"
                        % path)
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise UserError("%s names a run twice; give every run its own name" % path)
    recipe = plan.get("recipe")
    if recipe is not None and not (isinstance(recipe, str) and recipe):
        raise UserError("%s: \"recipe\" must be a recipe name or a .json file beside the plan, got %r" % (path, recipe))
    if recipe and recipe.endswith(".json") and not os.path.isabs(recipe):
        recipe = os.path.join(os.path.dirname(os.path.abspath(path)), recipe)
    return runs, recipe


def _command(args, run, recipe=None):
    d = os.path.join(args.out, run["name"])
    return [sys.executable, os.path.join(ROOT, "build.py"), "train", "--data", args.data, "--out", d,
            "--run-dir", os.path.join(d, "run"), "--no-progress", "--device", args.device,
            "--threads", str(args.threads)] + (["--recipe", recipe] if recipe else []) + run["args"]


def _result(args, run, rc, seconds):
    """Per-level test accuracies of one run: from its checkpoint when it finished, else from its run state."""
    d = os.path.join(args.out, run["name"])
    row = {"name": run["name"], "args": run["args"], "exit": rc, "wall_seconds": round(seconds, 1)}
    static = "static" in run["args"]
    metas = [os.path.join(d, "width-%d" % k, "model.json") for k in range(1, 9)] if static else \
        [os.path.join(d, "model.json")]
    metas = [m for m in metas if os.path.isfile(m)]
    if metas and rc == 0:
        levels = [lv for m in metas for lv in load_json(m, "train the run again")["levels"]]
        row.update(partial=False, levels=[round(100 * lv["test_accuracy"], 2) for lv in levels],
                   mmacs=[round(lv["macs"] / 1e6, 2) for lv in levels],
                   train_seconds=[round(load_json(m, "train the run again")["training"]["total_seconds"], 1)
                                  for m in metas])
        return row
    state = os.path.join(d, "run", "state.json")
    hist = load_json(state, "train the run again").get("history", []) if os.path.isfile(state) else []
    row.update(partial=True, levels=[round(100 * a, 2) for a in hist[-1]["test_acc"]] if hist else [],
               reached="step %d epoch %d" % (hist[-1]["step"], hist[-1]["epoch"]) if hist else "nothing")
    return row


def _table(rows):
    lines = ["| run | flags | level accuracies (%) | MMACs | wall s |", "|---|---|---|---|---|"]
    for r in rows:
        acc = " / ".join("%.2f" % a for a in r["levels"]) or "-"
        if r.get("partial"):
            acc += " (partial: %s)" % r.get("reached")
        lines.append("| %s | `%s` | %s | %s | %.0f |" % (r["name"], " ".join(r["args"]), acc,
                                                        " / ".join("%.1f" % m for m in r.get("mmacs", [])) or "-",
                                                        r["wall_seconds"]))
    return "\n".join(lines) + "\n"


def main(args):
    runs, recipe = read_plan(args.plan)
    os.makedirs(args.out, exist_ok=True)
    t0, pending, live, rows = time.time(), list(runs), {}, {}
    while pending or live:
        while pending and len(live) < max(1, args.jobs):
            run = pending.pop(0)
            os.makedirs(os.path.join(args.out, run["name"]), exist_ok=True)
            log = open(os.path.join(args.out, run["name"], "train.log"), "ab")
            live[run["name"]] = (run, subprocess.Popen(_command(args, run, recipe), stdout=log, stderr=subprocess.STDOUT),
                                 time.time(), log)
        time.sleep(2)
        late = args.deadline is not None and time.time() - t0 > args.deadline
        for name, (run, proc, start, log) in list(live.items()):
            if late and proc.poll() is None:
                proc.terminate()
                proc.wait()
            if proc.poll() is not None:
                log.close()
                rows[name] = _result(args, run, proc.returncode, time.time() - start)
                print("%s: %s" % (name, rows[name]["levels"]), flush=True)
                del live[name]
        if late:
            pending = []
    ordered = [rows[r["name"]] for r in runs if r["name"] in rows]
    atomic_write_json(os.path.join(args.out, "ablation.json"), {"device": args.device, "runs": ordered})
    atomic_write_bytes(os.path.join(args.out, "ablation.md"), _table(ordered).encode())
    print(_table(ordered))
    return 0
