import json
import os

import pytest
import torch
from safetensors.torch import load_file

from compile.train import Trainer, default_config
from conftest import step_snapshots, train_tiny


@pytest.mark.parametrize("scheme,prefix", [("grouped", "groups.{}."), ("dense", None)])
def test_later_steps_leave_earlier_groups_bit_for_bit_unchanged(tiny_data, tmp_path, monkeypatch, scheme, prefix):
    snaps = step_snapshots(monkeypatch)
    train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=3, scheme=scheme, epochs=1)
    final = load_file(str(tmp_path / "out" / "model.safetensors"))

    def owned(g):
        if scheme == "grouped":
            return [k for k in final if k.startswith(prefix.format(g - 1))]
        return [k for k in final if (".blocks.%d." % (g - 1)) in k or k.startswith("heads.%d." % (g - 1))]

    for g in (1, 2):
        keys = owned(g)
        assert keys
        for k in keys:  # weights and BatchNorm statistics of group g, after steps g+1.. have run
            assert torch.equal(snaps[g][k], final[k]), k
    # and the step did train something: group 3 differs from its state before step 3
    assert any(not torch.equal(snaps[2][k], final[k]) for k in owned(3))


def test_killed_training_resumes_from_last_epoch_and_matches_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    ref = train_tiny(tiny_data, str(tmp_path / "ref"), str(tmp_path / "ref-run"), groups=2, epochs=2)
    calls = {"n": 0}
    orig = Trainer._save_state

    def dies_after_fourth_save(self, st, model, opt):
        orig(self, st, model, opt)
        calls["n"] += 1
        if calls["n"] == 4:  # saves: s1e1, s1e2, end of step 1, s2e1
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_state", dies_after_fourth_save)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, epochs=2)
    st = json.load(open(str(tmp_path / "run" / "state.json")))
    assert (st["stage"], st["epoch"]) == (2, 1)
    monkeypatch.setattr(Trainer, "_save_state", orig)
    resumed = train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, epochs=2)
    a, b = load_file(ref), load_file(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resuming_with_other_settings_is_refused(tiny_data, tmp_path):
    from compile.errors import UserError
    train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, epochs=1)
    with pytest.raises(UserError, match="different settings.*epochs"):
        train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, epochs=3)


def test_static_scheme_writes_one_checkpoint_per_width(tiny_data, tmp_path):
    train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, scheme="static", epochs=1)
    for w in (1, 2):
        meta = json.load(open(str(tmp_path / "out" / ("width-%d" % w) / "model.json")))
        assert meta["groups"] == w and meta["static_width"] == w
        assert [lv["level"] for lv in meta["levels"]] == [w]


def test_checkpoint_records_everything_the_compiler_needs(tiny_ckpt):
    meta = json.load(open(tiny_ckpt[:-len(".safetensors")] + ".json"))
    for key in ("arch", "groups", "input", "training", "data", "code_version", "levels", "level_scale"):
        assert key in meta
    assert [lv["level"] for lv in meta["levels"]] == [1, 2, 3]
    for lv in meta["levels"]:
        assert lv["params"] > 0 and lv["macs"] > 0 and 0.0 <= lv["test_accuracy"] <= 1.0
    assert len(meta["input"]["mean"]) == 3 and meta["data"]["fingerprint"]
    assert os.path.isfile(os.path.join(os.path.dirname(tiny_ckpt), "training.md"))


def test_training_learns_the_toy_task(tiny_ckpt):
    meta = json.load(open(tiny_ckpt[:-len(".safetensors")] + ".json"))
    assert meta["levels"][-1]["test_accuracy"] > 0.3  # chance is 0.1


def test_per_step_epochs_train_each_step_for_its_own_count(tiny_data, tmp_path):
    train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, epochs="1,2")
    meta = json.load(open(str(tmp_path / "out" / "model.json")))
    assert [(h["step"], h["epoch"]) for h in meta["training"]["history"]] == [(1, 1), (2, 1), (2, 2)]
    assert meta["training"]["recipe"]["epochs"] == [1, 2]


def test_a_steps_recorded_time_includes_fitting_its_level(tiny_data, tmp_path, monkeypatch):
    """The training budget counts the whole step: the level's weights and head are fitted inside it."""
    import time
    import compile.train as train_mod
    real = train_mod.fit_level_head

    def slow_fit(*a, **k):
        time.sleep(0.5)
        return real(*a, **k)
    monkeypatch.setattr(train_mod, "fit_level_head", slow_fit)
    train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, combine="heads")
    t = json.load(open(str(tmp_path / "out" / "model.json")))["training"]
    for step in (1, 2):
        epochs = sum(h["seconds"] for h in t["history"] if h["step"] == step)
        assert t["seconds_per_step"][str(step)] >= epochs + 0.5


def test_static_baselines_take_the_unequal_widths_and_only_the_asked_levels(tiny_data, tmp_path):
    train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=3, scheme="static", epochs="1,1,2",
               group_widths="1,1.5,2", only="1,3")
    assert not os.path.exists(str(tmp_path / "out" / "width-2"))
    w1 = json.load(open(str(tmp_path / "out" / "width-1" / "model.json")))
    w3 = json.load(open(str(tmp_path / "out" / "width-3" / "model.json")))
    assert w1["group_widths"] == [1.0] and w3["group_widths"] == [1.0, 1.5, 2.0]
    assert [h["epoch"] for h in w3["training"]["history"]] == [1, 2]  # width 3 trains for step 3's epochs


def test_distillation_adds_a_positive_term_and_keeps_frozen_groups_fixed(tiny_data, tmp_path, monkeypatch):
    from compile.data import load_dataset
    data = load_dataset(tiny_data)
    losses = {}
    for kd in (0.0, 1.0):
        cfg = default_config(groups=2, epochs=1, batch_size=32, distill=kd)
        t = Trainer(cfg, data, str(tmp_path / ("r%g" % kd)), str(tmp_path / ("o%g" % kd)), log=lambda *a: None,
                    progress=False)
        model = t._new_model(1)
        torch.manual_seed(0)
        x = torch.randn(8, 3, 32, 32)
        losses[kd] = t._loss(model, x, torch.arange(8) % 3, 2)[0].item()
    assert losses[1.0] > losses[0.0]  # KL(teacher || group 2) >= 0, and > 0 for two untrained paths
    snaps = step_snapshots(monkeypatch)
    train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, distill=1.0)
    final = load_file(str(tmp_path / "out" / "model.safetensors"))
    for k in [k for k in final if k.startswith("groups.0.")]:
        assert torch.equal(snaps[1][k], final[k]), k


def test_cutout_blanks_one_square_per_image():
    from compile.train import cutout
    x = torch.ones(16, 3, 32, 32)
    out = cutout(x, 8, torch.Generator().manual_seed(0))
    zeros = (out == 0).all(1)  # all channels of a pixel blanked together
    per_image = zeros.flatten(1).sum(1)
    assert bool((per_image > 0).all()) and bool((per_image <= 8 * 8).all())
    for i in range(16):  # the blanked pixels form one axis-aligned box
        ys, xs = torch.nonzero(zeros[i], as_tuple=True)
        assert (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) == per_image[i]


def _recipe_cfg(name, scheme="grouped", **flags):
    from compile.recipes import KEYS, load_recipe, merge
    given = {k: flags.get(k) for k in KEYS}
    return default_config(scheme=scheme, **merge(load_recipe(name), given, scheme))


@pytest.mark.parametrize("recipe,ckpt", [("default", "default"), ("paper", "paper"), ("90-minute", "90-minute")])
def test_each_recipe_reproduces_its_shipped_checkpoints_training_settings(recipe, ckpt):
    """`python build.py train --data DIR [--recipe paper]` trains what artifacts/ ships, not something near it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shipped = json.load(open(os.path.join(root, "artifacts", ckpt, "model.json")))["training"]["recipe"]
    cfg = _recipe_cfg(recipe)
    from compile.checkpoint import resolve, sha256_file
    if cfg.get("teacher"):  # the recipe names the teacher's checkpoint; the run records its sha256
        cfg["teacher"] = sha256_file(resolve(cfg["teacher"]))
    if cfg.get("teacher_epochs"):  # the run trained its teacher: the one shipped as its static full-width baseline
        cfg["teacher"] = sha256_file(os.path.join(root, "artifacts", ckpt, "baselines", "static", "width-4",
                                                  "model.safetensors"))
    assert {k: cfg[k] for k in shipped if k != "arch_spec"} == {k: v for k, v in shipped.items() if k != "arch_spec"}


def test_flags_win_over_the_recipe_and_another_group_count_drops_its_per_group_lists():
    cfg = _recipe_cfg("default", groups=2, arch="alexnet-cifar")
    assert cfg["groups"] == 2 and cfg["arch"] == "alexnet-cifar" and cfg["group_widths"] == [1.0, 1.0]
    assert cfg["epochs"] == 10 and cfg["combine"] == "heads"
    static = _recipe_cfg("default", scheme="static")
    assert static["group_widths"] == [1.0, 1.5, 2.0, 3.0] and static["epochs"] == [10, 10, 15, 20]
    assert static["combine"] == "mean" and static["teacher"] is None  # baselines train from scratch
    from compile.errors import UserError
    with pytest.raises(UserError, match="equal groups only.*--recipe paper"):
        _recipe_cfg("default", scheme="dense")


def test_holdout_sets_the_held_out_slice_and_is_recorded_only_when_given(tiny_data, tmp_path):
    for frac, held in ((0.25, 64), (None, 25)):  # 256 toy training images; the default holds out 10%
        path = train_tiny(tiny_data, str(tmp_path / ("o%s" % frac)), str(tmp_path / ("r%s" % frac)), groups=2,
                          combine="fitted", holdout=frac)
        meta = json.load(open(os.path.splitext(path)[0] + ".json"))
        assert meta["data"]["held_out_images"] == held and meta["data"]["train_images"] == 256 - held
        assert meta["training"]["recipe"].get("holdout") == frac
    from compile.errors import UserError
    with pytest.raises(UserError, match="--holdout must be a fraction above 0 and at most 0.5"):
        default_config(holdout=0.6)


def test_each_epochs_evaluation_reusing_the_frozen_groups_features_equals_a_full_evaluation(tiny_data, tmp_path,
                                                                                         monkeypatch):
    from compile.train_record import evaluate_levels
    seen = []
    orig = Trainer.evaluate

    def checked(self, model, upto):
        fast = orig(self, model, upto)
        full = evaluate_levels(model, self.norm, self.data.test_x, self.data.test_y, upto, self.device)
        assert fast == full, (upto, fast, full)
        seen.append((upto, self._known is not None and self._known[1] == upto))
        return fast

    monkeypatch.setattr(Trainer, "evaluate", checked)
    train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=3, epochs=2, combine="heads")
    # steps 2 and 3 (and the final evaluation) reused features; step 1 has nothing frozen
    assert [u for u, reused in seen if reused] and all(reused for u, reused in seen if u > 1)


def test_the_default_recipes_teacher_resolves_beside_the_recipe_and_a_flag_replaces_or_drops_it(tmp_path,
                                                                                             monkeypatch):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(str(tmp_path))  # any working directory: the recipe's path does not depend on it
    cfg = _recipe_cfg("default")
    assert cfg["teacher"] == os.path.join(root, "artifacts", "baselines", "static", "width-4")
    assert (cfg["teacher_weight"], cfg["teacher_temp"]) == (1.0, 4.0)
    assert _recipe_cfg("default", teacher="none")["teacher"] is None
    own = _recipe_cfg("default", teacher_epochs=5)  # training a teacher replaces the recipe's checkpoint
    assert own["teacher"] is None and own["teacher_epochs"] == 5
    assert _recipe_cfg("default", teacher="other/ckpt")["teacher"] == "other/ckpt"
