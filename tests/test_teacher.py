"""Distillation from a trained teacher (build.py train --teacher, compile/teacher.py)."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from compile.checkpoint import load_checkpoint
from compile.data import Normalizer, augment, load_dataset
from compile.errors import UserError
from compile.train import Trainer, default_config
from conftest import make_cifar_like, run_cli, step_snapshots, train_tiny


@pytest.fixture(scope="module")
def teacher_ckpt(tiny_data, tmp_path_factory):
    """A static width-2 model of the toy task: the wider model the grouped students learn from."""
    d = tmp_path_factory.mktemp("teacher")
    train_tiny(tiny_data, str(d / "out"), str(d / "run"), groups=2, scheme="static", epochs=2, only="2")
    return str(d / "out" / "width-2" / "model.safetensors")


def _trainer(data_dir, run_dir, out, **over):
    cfg = default_config(groups=2, epochs=1, batch_size=32, **over)
    return Trainer(cfg, load_dataset(data_dir), run_dir, out, log=lambda *a: None, progress=False)


def test_augment_reports_which_images_it_flipped():
    x = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).view(4, 3, 8, 8)
    out, flip = augment(x, torch.Generator().manual_seed(3), pad=0, return_flip=True)
    for i in range(4):
        assert torch.equal(out[i], x[i].flip(2) if flip[i] else x[i])
    again = augment(x, torch.Generator().manual_seed(3), pad=0)  # same random stream with or without the flag
    assert torch.equal(again, out)


def test_teacher_logits_are_its_outputs_plain_and_flipped_and_computed_once(tiny_data, teacher_ckpt, tmp_path,
                                                                            monkeypatch):
    t = _trainer(tiny_data, str(tmp_path / "run"), str(tmp_path / "out"), teacher=teacher_ckpt)
    t.run()
    caches = [f for f in os.listdir(str(tmp_path / "run")) if f.startswith("teacher-")]
    assert caches == ["teacher-%s.safetensors" % t.teacher.sha256[:16]]
    logits = load_file(str(tmp_path / "run" / caches[0]))["logits"]
    model, meta = load_checkpoint(teacher_ckpt)
    x = Normalizer(meta["input"]["mean"], meta["input"]["std"])(t.data.train_x[:16])
    with torch.no_grad():
        assert torch.allclose(logits[0, :16], model(x), atol=1e-4)
        assert torch.allclose(logits[1, :16], model(x.flip(3)), atol=1e-4)
    # a second run in the same dir (another step count) reads the cache: the teacher never runs again
    t2 = _trainer(tiny_data, str(tmp_path / "run2"), str(tmp_path / "out2"), teacher=teacher_ckpt)
    os.makedirs(str(tmp_path / "run2"))
    os.link(str(tmp_path / "run" / caches[0]), str(tmp_path / "run2" / caches[0]))
    monkeypatch.setattr(t2.teacher.model, "forward", lambda *a, **k: pytest.fail("the teacher ran again"))
    t2.run()


def test_teacher_term_pulls_towards_the_teacher_and_frozen_groups_stay_bit_for_bit(tiny_data, teacher_ckpt, tmp_path,
                                                                                     monkeypatch):
    t = _trainer(tiny_data, str(tmp_path / "r"), str(tmp_path / "o"), teacher=teacher_ckpt, teacher_weight=2.0)
    model = t._new_model(1)
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 3
    with torch.no_grad():
        own = model.groups[1](x)
        plain = t._loss(model, x, y, 2)[0].item()
        agrees = t._loss(model, x, y, 2, soft=own * 4)[0].item()  # a teacher that ranks the classes as group 2 does
        disagrees = t._loss(model, x, y, 2, soft=-own * 4)[0].item()
    assert plain < agrees < disagrees
    snaps = step_snapshots(monkeypatch)
    train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, teacher=teacher_ckpt)
    final = load_file(str(tmp_path / "out" / "model.safetensors"))
    for k in [k for k in final if k.startswith("groups.0.")]:
        assert torch.equal(snaps[1][k], final[k]), k


def test_checkpoint_records_its_teacher_and_a_static_student_trains_too(tiny_data, teacher_ckpt, tmp_path):
    path = train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, teacher=teacher_ckpt,
                      teacher_temp=2.0)
    meta = json.load(open(os.path.splitext(path)[0] + ".json"))
    rec = meta["training"]["teacher"]
    assert rec["sha256"] == meta["training"]["recipe"]["teacher"] and meta["training"]["recipe"]["teacher_temp"] == 2.0
    assert rec["scheme"] == "static" and 0 <= rec["test_accuracy"] <= 1
    train_tiny(tiny_data, str(tmp_path / "s"), str(tmp_path / "srun"), groups=1, scheme="static", teacher=teacher_ckpt)
    static = json.load(open(str(tmp_path / "s" / "width-1" / "model.json")))
    assert static["training"]["teacher"]["sha256"] == rec["sha256"]


def test_a_run_without_a_teacher_records_the_recipe_it_always_did(tiny_data, tmp_path):
    path = train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2)
    meta = json.load(open(os.path.splitext(path)[0] + ".json"))
    assert not {"teacher", "teacher_weight", "teacher_temp"} & set(meta["training"]["recipe"])
    assert meta["training"]["teacher"] is None


def test_a_teacher_trained_on_other_data_is_refused_in_one_line(tiny_data, teacher_ckpt, tmp_path):
    other = make_cifar_like(str(tmp_path / "other"), seed=1)
    with pytest.raises(UserError, match="trained on other data.*--scheme static"):
        _trainer(other, str(tmp_path / "r"), str(tmp_path / "o"), teacher=teacher_ckpt)


def test_resuming_with_another_teacher_is_refused(tiny_data, teacher_ckpt, tmp_path):
    run = str(tmp_path / "run")
    _trainer(tiny_data, run, str(tmp_path / "o"), teacher=teacher_ckpt).run()
    with pytest.raises(UserError, match=r"different settings \(teacher, teacher_temp, teacher_weight\)"):
        _trainer(tiny_data, run, str(tmp_path / "o"))._load_state()
    with pytest.raises(UserError, match=r"different settings \(teacher_weight\)"):
        _trainer(tiny_data, run, str(tmp_path / "o"), teacher=teacher_ckpt, teacher_weight=0.5)._load_state()


@pytest.mark.parametrize("flag,value", [("--teacher-weight", "-1"), ("--teacher-temp", "0")])
def test_bad_teacher_flags_are_one_line_before_anything_runs(tiny_data, tmp_path, flag, value):
    r = run_cli(["build.py", "train", "--data", tiny_data, "--teacher", "x", flag, value, "--out", str(tmp_path / "o")])
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and flag in r.stderr
    assert not os.path.exists(str(tmp_path / "o"))


def test_teacher_epochs_trains_the_static_full_width_teacher_first_and_counts_it_in_the_schedule(tiny_data, tmp_path):
    run = tmp_path / "run"
    path = train_tiny(tiny_data, str(tmp_path / "out"), str(run), groups=2, group_widths="1,1.5", teacher_epochs=1)
    own = run / "teacher" / "width-2" / "model.safetensors"
    teacher_meta = json.load(open(str(own.with_suffix(".json"))))
    assert teacher_meta["scheme"] == "static" and teacher_meta["group_widths"] == [1.0, 1.5]
    meta = json.load(open(os.path.splitext(path)[0] + ".json"))
    t = meta["training"]
    from compile.checkpoint import sha256_file
    assert t["recipe"]["teacher"] == sha256_file(str(own)) and t["recipe"]["teacher_epochs"] == 1
    spent = t["teacher"]["training_seconds"] + t["teacher"]["logits_seconds"]
    assert spent > 0 and abs(t["schedule_seconds"] - (t["total_seconds"] + spent)) < 1e-6
    assert "the schedule with it" in open(str(tmp_path / "out" / "training.md")).read()


def test_teacher_flags_that_cannot_go_together_are_refused_in_one_line():
    with pytest.raises(UserError, match="--teacher and --teacher-epochs"):
        default_config(teacher="x", teacher_epochs=2)
    with pytest.raises(UserError, match="static baseline takes --teacher CKPT"):
        default_config(scheme="static", teacher_epochs=2)


def test_the_recipes_teacher_is_dropped_with_a_line_on_other_data_and_kept_on_its_own(tiny_data, teacher_ckpt,
                                                                                    tmp_path):
    from compile.teacher import drop_unfit_recipe_teacher
    lines = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shipped = os.path.join(root, "artifacts", "baselines", "static", "width-4")  # CIFAR-10's, not the toy set's
    cfg = drop_unfit_recipe_teacher(default_config(teacher=shipped), load_dataset(tiny_data), log=lines.append)
    assert cfg["teacher"] is None and len(lines) == 1 and "other data" in lines[0] and "--teacher CKPT" in lines[0]
    missing = drop_unfit_recipe_teacher(default_config(teacher=str(tmp_path / "gone")), load_dataset(tiny_data),
                                        log=lines.append)
    assert missing["teacher"] is None and "does not exist" in lines[-1]
    kept = drop_unfit_recipe_teacher(default_config(teacher=teacher_ckpt), load_dataset(tiny_data), log=lines.append)
    assert kept["teacher"] == teacher_ckpt and len(lines) == 2
