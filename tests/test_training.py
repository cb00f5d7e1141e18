import json
import os

import pytest
import torch
from safetensors.torch import load_file

from compile.data import load_dataset
from compile.train import Trainer, default_config
from conftest import train_tiny


def _snapshots(monkeypatch):
    """Record the full model state each time a training step finishes."""
    snaps = {}
    orig = Trainer._save_state

    def spy(self, st, model, opt):
        if st["epoch"] == 0 and st["done"]:
            snaps[st["done"][-1]] = {k: v.clone() for k, v in model.state_dict().items()}
        return orig(self, st, model, opt)

    monkeypatch.setattr(Trainer, "_save_state", spy)
    return snaps


@pytest.mark.parametrize("scheme,prefix", [("grouped", "groups.{}."), ("dense", None)])
def test_later_steps_leave_earlier_groups_bit_for_bit_unchanged(tiny_data, tmp_path, monkeypatch, scheme, prefix):
    snaps = _snapshots(monkeypatch)
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
