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
