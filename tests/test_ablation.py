"""`python build.py ablate`: a plan of training variants run side by side and tabulated."""
import json
import os

from conftest import run_cli


def _plan(tmp_path, runs):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps({"runs": runs}))
    return str(p)


def test_each_run_is_an_ordinary_training_command_and_the_table_holds_its_levels(tiny_data, tmp_path):
    plan = _plan(tmp_path, [
        {"name": "two-groups", "args": ["--recipe", "paper", "--groups", "2", "--epochs", "1", "--batch-size", "64"]},
        {"name": "static", "args": ["--recipe", "paper", "--scheme", "static", "--groups", "2", "--epochs", "1",
                                    "--batch-size", "64"]}])
    out = tmp_path / "out"
    res = run_cli(["build.py", "ablate", "--data", tiny_data, "--plan", plan, "--out", str(out), "--jobs", "2"],
                  timeout=600)
    assert res.returncode == 0, res.stderr
    table = json.load(open(str(out / "ablation.json")))
    rows = {r["name"]: r for r in table["runs"]}
    assert not rows["two-groups"]["partial"] and len(rows["two-groups"]["levels"]) == 2
    assert not rows["static"]["partial"] and len(rows["static"]["levels"]) == 2  # width 1 and width 2
    meta = json.load(open(str(out / "two-groups" / "model.json")))
    assert [round(100 * lv["test_accuracy"], 2) for lv in meta["levels"]] == rows["two-groups"]["levels"]
    md = (out / "ablation.md").read_text()
    assert "| two-groups | `--recipe paper --groups 2" in md


def test_a_run_stopped_at_the_deadline_is_reported_partial_with_the_epochs_it_finished(tiny_data, tmp_path):
    plan = _plan(tmp_path, [{"name": "long", "args": ["--recipe", "paper", "--groups", "2", "--epochs", "200",
                                                      "--batch-size", "64"]}])
    out = tmp_path / "out"
    res = run_cli(["build.py", "ablate", "--data", tiny_data, "--plan", plan, "--out", str(out), "--deadline", "25"],
                  timeout=600)
    assert res.returncode == 0, res.stderr
    (row,) = json.load(open(str(out / "ablation.json")))["runs"]
    assert row["partial"] and row["reached"].startswith("step 1 epoch ")
    assert not os.path.exists(str(out / "long" / "model.safetensors"))


def test_a_malformed_plan_is_one_line(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"runs": [{"name": "a b/../c", "args": []}]}))
    res = run_cli(["build.py", "ablate", "--data", str(tmp_path), "--plan", str(bad), "--out", str(tmp_path / "o")])
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "letters-digits" in res.stderr


def test_the_shipped_plan_runs_on_its_own_base_recipe_without_the_defaults_teacher():
    """docs/ablation/plan.json's rows are the ablation table's: a later default recipe (a teacher, another
    own-loss weight) must not change what they train, and every row must still be a valid command."""
    import build
    from compile.ablation import read_plan
    from compile.recipes import KEYS, load_recipe, merge
    from compile.train import default_config
    runs, recipe = read_plan(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                          "docs", "ablation", "plan.json"))
    assert recipe.endswith(os.path.join("docs", "ablation", "base.json"))
    cfgs = {}
    for run in runs:
        args = build.build_parser().parse_args(["train", "--data", "D", "--recipe", recipe] + run["args"])
        chosen = merge(load_recipe(args.recipe), {k: getattr(args, k) for k in KEYS}, args.scheme)
        cfgs[run["name"]] = default_config(scheme=args.scheme, **chosen)
    assert all(c["teacher"] is None and c["teacher_epochs"] is None for c in cfgs.values())
    base = cfgs["default"]
    assert (base["own_loss_weight"], base["combine"], base["epochs"]) == (1.0, "fitted", 15)
    assert cfgs["own-loss-3"]["own_loss_weight"] == 3.0 and cfgs["mean-weights"]["combine"] == "mean"
    paper = cfgs["paper-alexnet-equal"]
    assert paper["arch"] == "alexnet-cifar" and paper["group_widths"] == [1.0] * 4 and paper["combine"] == "mean"
    assert cfgs["dense-vgg-equal"]["group_widths"] == [1.0] * 4
