"""Architectures as data: spec validation, built-in costs, unequal widths, level weights (no compiling here)."""
import json

import pytest
import torch

from compile.arch import builtin_names, layer_table, level_costs, load_spec, parse_widths, scale_channels
from compile.errors import UserError
from compile.model import DenseIncrementalNet, GroupedNet, count_macs, count_params
from conftest import run_cli


def _spec_file(tmp_path, blocks, name="custom"):
    p = tmp_path / "spec.json"
    p.write_text(json.dumps({"name": name, "blocks": blocks}))
    return str(p)


@pytest.mark.parametrize("blocks,words", [
    ([{"type": "conv", "channels": 8}, {"type": "transformer"}], ["block 2", "type", "transformer"]),
    ([{"type": "conv", "channels": 0}], ["block 1 (conv)", "channels", "0"]),
    ([{"type": "conv", "channels": 8, "kernal": 3}], ["block 1 (conv)", "kernal"]),
    ([{"type": "fc", "units": 16}, {"type": "conv", "channels": 8}], ["block 2 (conv)", "flat"]),
    ([{"type": "conv", "channels": 8, "act": "gelu"}], ["block 1 (conv)", "act", "gelu"]),
    ([], ["blocks", "non-empty"]),
])
def test_malformed_spec_is_one_line_naming_the_block_and_field(tmp_path, blocks, words):
    with pytest.raises(UserError) as exc:
        load_spec(_spec_file(tmp_path, blocks))
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_a_stride_that_shrinks_the_image_to_nothing_names_the_block(tmp_path):
    spec = load_spec(_spec_file(tmp_path, [{"type": "conv", "channels": 8, "stride": 2}] * 3 +
                                [{"type": "maxpool", "kernel": 4}]))
    with pytest.raises(UserError, match=r"block 4 \(maxpool\).*shrinks the 2x2 image to nothing"):
        layer_table(spec, input_size=16)
    layer_table(spec, input_size=32)  # the same spec fits a larger image


def test_train_cli_refuses_a_malformed_spec_in_one_line_before_reading_data(tmp_path):
    res = run_cli(["build.py", "train", "--data", str(tmp_path), "--arch",
                   _spec_file(tmp_path, [{"type": "residual", "channels": -1}])])
    assert res.returncode == 1 and res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert "block 1 (residual)" in res.stderr and "channels" in res.stderr


def test_unknown_builtin_lists_the_builtins():
    with pytest.raises(UserError, match="alexnet-cifar, mobilenet-cifar, resnet-cifar, vgg-cifar"):
        load_spec("lenet")


@pytest.mark.parametrize("name", ["alexnet-cifar", "vgg-cifar", "resnet-cifar", "mobilenet-cifar"])
def test_layer_table_matches_the_built_model_at_unequal_widths(name):
    """The table (what the checkpoint and manifest record) and forward hooks on the model agree exactly."""
    widths = [1.0, 1.5, 2.0]
    m = GroupedNet(name, groups=3, widths=widths)
    for row in level_costs(load_spec(name), widths):
        assert (count_params(m, row["level"]), count_macs(m, row["level"])) == (row["params"], row["macs"])


def test_alexnet_cifar_costs_are_the_papers_configuration_unchanged():
    rows = level_costs(load_spec("alexnet-cifar"), [1.0] * 4)
    assert [(r["params"], r["macs"]) for r in rows] == [(129514 * k, 7668992 * k) for k in range(1, 5)]


def test_resnet_builtin_is_20_to_40_mmacs_per_group_with_its_wide_layers_below_full_resolution():
    table = layer_table(load_spec("resnet-cifar"))
    assert 20e6 <= sum(r["macs"] for r in table) <= 40e6
    assert all(r["hw"] <= 16 for r in table if r["type"] == "residual")


def test_group_widths_round_channels_to_multiples_of_four_and_macs_grow_with_the_square():
    assert [scale_channels(c, m) for c, m in ((16, 1), (10, 1), (16, 1.5), (16, 2), (6, 0.5), (2, 0.5))] == \
        [16, 10, 24, 32, 3, 1]
    rows = level_costs(load_spec("vgg-cifar"), [1, 1, 1.5, 2])
    per_group = [rows[0]["macs"]] + [b["macs"] - a["macs"] for a, b in zip(rows, rows[1:])]
    assert per_group[0] == per_group[1] and 2.0 < per_group[2] / per_group[0] < 2.5
    assert 3.7 < per_group[3] / per_group[0] < 4.3
    assert rows[-1]["macs_ratio"] == round(rows[-1]["macs"] / rows[0]["macs"], 4) > 4


@pytest.mark.parametrize("text,groups,words", [("1,1", 3, "3 groups"), ("1,x,2", 3, "numbers"),
                                               ("1,0,1", 3, "outside")])
def test_bad_group_widths_are_one_line(text, groups, words):
    with pytest.raises(UserError, match=words):
        parse_widths(text, groups)


def test_dense_baseline_refuses_blocks_it_cannot_express():
    with pytest.raises(UserError, match=r"resnet-cifar block 3 \(residual\)"):
        DenseIncrementalNet("resnet-cifar", groups=2)


def test_every_builtin_runs_on_one_channel_48px_five_class_inputs():
    x = torch.randn(2, 1, 48, 48)
    for name in builtin_names():
        m = GroupedNet(name, groups=2, in_channels=1, num_classes=5, input_size=48).eval()
        assert m(x, 2).shape == (2, 5)


def test_level_weights_combine_contributions_and_level_k_reads_only_groups_up_to_k():
    torch.manual_seed(0)
    w = [[1.0], [0.2, 0.8], [0.1, 0.3, 0.6]]
    m = GroupedNet("mobilenet-cifar", groups=3, widths=[1, 1, 2], level_weights=w).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        c = [m.group_logits(x, g) for g in (1, 2, 3)]
        for k in (1, 2, 3):
            want = sum(wg * cg for wg, cg in zip(w[k - 1], c))
            assert torch.allclose(m(x, k), want, atol=1e-6)
            assert torch.allclose(m.all_levels(x)[k - 1], want, atol=1e-6)
    with pytest.raises(UserError, match="level_weights must be 3 lists"):
        GroupedNet(groups=3, level_weights=[[1.0], [0.5, 0.5]])


def test_fitted_level_weights_are_chosen_once_per_step_and_never_changed_later(tiny_data, tmp_path, monkeypatch):
    from compile.train import Trainer
    from conftest import train_tiny
    seen = []
    orig = Trainer._fit_level

    def spy(self, model, stage, st):
        orig(self, model, stage, st)
        seen.append([list(r) for r in model.level_weights])

    monkeypatch.setattr(Trainer, "_fit_level", spy)
    ck = train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=3, epochs=1, combine="fitted")
    meta = json.load(open(ck[:-len(".safetensors")] + ".json"))
    final = meta["level_weights"]
    assert [s[k] for k, s in enumerate(seen)] == final  # level k's weights as fitted right after step k
    assert all(v > 0 for r in final for v in r) and final[2] != [1.0 / 3] * 3
    assert meta["data"]["held_out_images"] == 25 and meta["data"]["train_images"] == 231


def test_resuming_after_the_spec_file_changed_is_refused(tiny_data, tmp_path):
    from conftest import train_tiny
    spec = [{"type": "conv", "channels": 8}, {"type": "maxpool"}, {"type": "gap"}]
    path = _spec_file(tmp_path, spec)
    train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, epochs=1, arch=path)
    _spec_file(tmp_path, [dict(spec[0], channels=12)] + spec[1:])
    with pytest.raises(UserError, match="different settings.*arch_spec"):
        train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=2, epochs=1, arch=path)


def test_info_archs_lists_every_builtin_with_its_cost():
    res = run_cli(["build.py", "info", "--archs"])
    assert res.returncode == 0, res.stderr
    rows = {r[0]: r for r in (line.split() for line in res.stdout.splitlines()) if r and r[0] in builtin_names()}
    assert sorted(rows) == builtin_names()
    assert rows["alexnet-cifar"][1:3] == ["129514", "7.67"] and rows["resnet-cifar"][2] == "27.10"


def test_a_spec_file_that_is_not_json_is_one_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{\"name\": \"x\", \"blocks\": [")
    with pytest.raises(UserError, match="bad.json is not valid JSON") as exc:
        load_spec(str(p))
    assert "\n" not in str(exc.value)
