import json
import os
import pickle
import shutil

import numpy as np
import pytest

from compile.checkpoint import load_checkpoint
from compile.errors import UserError
from conftest import run_cli


def _copy(ckpt, tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(os.path.dirname(ckpt), str(d))
    return str(d / "model.safetensors")


def _one_line_error(res, *words):
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), res.stderr
    for w in words:
        assert w in err[0], err[0]


def test_truncated_checkpoint_is_named_in_a_one_line_error(tiny_ckpt, tmp_path):
    p = _copy(tiny_ckpt, tmp_path)
    with open(p, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(UserError, match="model.safetensors.*sha256"):
        load_checkpoint(p)
    _one_line_error(run_cli(["build.py", "info", p]), p)


def test_checkpoint_that_is_not_safetensors_is_rejected_without_unpickling(tiny_ckpt, tmp_path):
    p = _copy(tiny_ckpt, tmp_path)
    with open(p, "wb") as f:
        pickle.dump({"a": 1}, f)
    meta = json.load(open(p[:-12] + ".json"))
    from compile.checkpoint import sha256_file
    meta["tensors"]["sha256"] = sha256_file(p)  # checksum matches: the format check must still catch it
    json.dump(meta, open(p[:-12] + ".json", "w"))
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_checkpoint(p)


def test_sidecar_from_another_model_is_a_mismatch(tiny_ckpt, tmp_path):
    p = _copy(tiny_ckpt, tmp_path)
    meta = json.load(open(p[:-12] + ".json"))
    meta["groups"], meta["level_scale"] = 5, [1.0 / k for k in range(1, 6)]  # a consistent 5-group sidecar
    meta["group_widths"], meta["level_weights"] = [1.0] * 5, [[1.0 / k] * k for k in range(1, 6)]
    json.dump(meta, open(p[:-12] + ".json", "w"))
    with pytest.raises(UserError, match="does not fit the model"):
        load_checkpoint(p)


def test_missing_sidecar_and_missing_file_say_what_to_do(tiny_ckpt, tmp_path):
    p = _copy(tiny_ckpt, tmp_path)
    os.unlink(p[:-12] + ".json")
    with pytest.raises(UserError, match="sidecar .* is missing"):
        load_checkpoint(p)
    with pytest.raises(UserError, match="does not exist.*build.py train"):
        load_checkpoint(str(tmp_path / "nope.safetensors"))


def test_json_that_is_not_a_grouped_checkpoint_is_rejected(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"x")
    (tmp_path / "m.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="not a grouped-model checkpoint"):
        load_checkpoint(str(tmp_path / "m.safetensors"))


def test_cifar_loader_refuses_pickles_that_carry_code(tmp_path):
    from compile.data import load_cifar10
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()

    class Evil(object):
        def __reduce__(self):
            return (os.system, ("echo pwned > %s" % (tmp_path / "pwned"),))

    for name in ("data_batch_1", "test_batch"):
        with open(str(d / name), "wb") as f:
            pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(UserError, match="not a readable CIFAR-10 batch"):
        load_cifar10(str(tmp_path))
    assert not (tmp_path / "pwned").exists()


def test_image_folder_data_set_of_any_size_is_resized_to_the_model_input(tmp_path):
    from PIL import Image
    from compile.data import load_dataset
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cats", "dogs"):
            os.makedirs(str(tmp_path / split / cls))
            for i in range(n):
                arr = rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)
                Image.fromarray(arr).save(str(tmp_path / split / cls / ("%d.png" % i)))
    ds = load_dataset(str(tmp_path), "auto", 32)
    assert ds.kind == "image-folder" and ds.classes == ["cats", "dogs"]
    assert tuple(ds.train_x.shape) == (6, 3, 32, 32) and tuple(ds.test_x.shape) == (4, 3, 32, 32)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1]


def test_train_cli_reports_missing_data_in_one_line(tmp_path):
    _one_line_error(run_cli(["build.py", "train", "--data", str(tmp_path / "none")]), "does not exist")


# ---- checks made before any work (compile/validate.py) ------------------------------------------------

def test_sidecar_claiming_ten_million_groups_is_refused_before_any_model_is_built(tiny_ckpt, tmp_path, monkeypatch):
    import compile.model
    p = _copy(tiny_ckpt, tmp_path)
    meta = json.load(open(p[:-12] + ".json"))
    meta["groups"] = 10000000
    json.dump(meta, open(p[:-12] + ".json", "w"))
    built = []
    monkeypatch.setattr(compile.model, "build_model", lambda *a, **k: built.append(a))
    with pytest.raises(UserError, match="groups must be an integer from 2 to 8, got 10000000"):
        load_checkpoint(p)
    assert built == []


def test_sidecar_for_a_bigger_model_is_checked_on_the_meta_device_against_the_tensor_header(tiny_ckpt, tmp_path,
                                                                                           monkeypatch):
    """A consistent sidecar for 8 groups over a 3-group tensor file: refused from the header's names, and the
    8-group model is only ever built on torch's meta device (no memory), never for real."""
    import torch
    import compile.model
    p = _copy(tiny_ckpt, tmp_path)
    meta = json.load(open(p[:-12] + ".json"))
    meta["groups"], meta["level_scale"] = 8, [1.0 / k for k in range(1, 9)]
    meta["group_widths"], meta["level_weights"] = [1.0] * 8, [[1.0 / k] * k for k in range(1, 9)]
    json.dump(meta, open(p[:-12] + ".json", "w"))
    devices, real = [], compile.model.build_model

    def recording(*a, **k):
        devices.append(torch.empty(0).device.type)  # the device new tensors go to while it is built
        return real(*a, **k)
    monkeypatch.setattr(compile.model, "build_model", recording)
    with pytest.raises(UserError, match="does not fit the model its sidecar describes .*8 groups"):
        load_checkpoint(p)
    assert devices == ["meta"]


def test_non_finite_training_loss_stops_the_run_and_writes_no_checkpoint(tiny_data, tmp_path, monkeypatch):
    import torch
    import compile.train
    from conftest import train_tiny
    real = compile.train.F.cross_entropy

    def diverging(*a, **k):
        return real(*a, **k) * torch.tensor(float("nan"))
    monkeypatch.setattr(compile.train.F, "cross_entropy", diverging)
    out, run = str(tmp_path / "out"), str(tmp_path / "run")
    with pytest.raises(UserError, match="training loss became nan at step 1 epoch 1 batch 1; no checkpoint"):
        train_tiny(tiny_data, out, run, groups=2, epochs=1)
    assert not os.path.exists(os.path.join(out, "model.safetensors"))
    assert not os.path.exists(os.path.join(run, "state.safetensors"))


def test_recipe_with_nan_learning_rate_is_refused_by_the_training_api_too():
    from compile.train import default_config
    with pytest.raises(UserError, match="--lr must be a finite number"):
        default_config(lr=float("nan"))
    with pytest.raises(UserError, match="--own-loss-weight"):
        default_config(own_loss_weight=-1.0)


def test_bundle_swap_refuses_a_directory_that_became_foreign_during_the_build(tmp_path):
    from compile.bundle import _swap_in
    built, out = tmp_path / "building", tmp_path / "out"
    built.mkdir()
    (built / "manifest.json").write_text("{}")
    out.mkdir()
    (out / "manifest.json").write_text('{"manifest_version": 3}')
    (out / "background.js").write_text("someone's work")
    with pytest.raises(UserError, match="refusing to replace it"):
        _swap_in(str(built), str(out))
    assert (out / "background.js").read_text() == "someone's work" and (built / "manifest.json").exists()


def test_a_bundle_of_our_own_is_replaced_by_a_rebuild(host_bundle, tmp_path):
    from compile.validate import check_replaceable
    copy = str(tmp_path / "b")
    shutil.copytree(host_bundle, copy)
    check_replaceable(copy)  # no error: a dynn-bundle manifest of a known version
    with open(os.path.join(copy, "manifest.json")) as f:
        man = json.load(f)
    man["schema_version"] = 0
    with open(os.path.join(copy, "manifest.json"), "w") as f:
        json.dump(man, f)
    with pytest.raises(UserError, match="refusing to replace it"):
        check_replaceable(copy)


def test_training_through_a_pipe_prints_one_line_per_epoch_and_no_progress_bar(tiny_data, tmp_path):
    res = run_cli(["build.py", "train", "--data", tiny_data, "--groups", "2", "--epochs", "1", "--batch-size", "64",
                   "--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "run")], timeout=300)
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr + res.stdout and "it/s" not in res.stderr
    epochs = [line for line in res.stdout.splitlines() if " epoch " in line]
    assert len(epochs) == 2 and all("loss" in line for line in epochs), res.stdout


def test_code_version_is_the_commit_git_reports():
    import subprocess
    from compile.train_record import code_version
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.dirname(__file__)),
                          stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    assert code_version()["git"] == (head or None)


def test_quiet_fds_hides_native_output_and_shows_it_only_when_the_block_fails(capfd):
    from runtime.cli import quiet_fds
    with quiet_fds():
        os.write(1, b"notice on fd 1\n")
        os.write(2, b"notice on fd 2\n")
    assert capfd.readouterr() == ("", "")
    with pytest.raises(ValueError):
        with quiet_fds((2,)):
            os.write(2, b"why it failed\n")
            raise ValueError("x")
    assert "why it failed" in capfd.readouterr().err


def test_tflite_runtime_versions_compare_as_versions_not_strings():
    from compile.emit_tflite import _vkey
    assert _vkey("2.10.0") > _vkey("2.9.1") and _vkey("2.7") == _vkey("2.7.0")


def test_training_may_overwrite_its_own_checkpoint_but_not_a_foreign_model_json(tiny_ckpt, tmp_path):
    from compile.validate import check_checkpoint_out
    check_checkpoint_out(os.path.dirname(tiny_ckpt), "grouped", 3)  # retraining into the same --out is fine
    (tmp_path / "model.json").write_text('{"format": "keras"}')
    with pytest.raises(UserError, match="refusing to overwrite"):
        check_checkpoint_out(str(tmp_path), "grouped", 3)
