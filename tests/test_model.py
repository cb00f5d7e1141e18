import pytest
import torch

from compile.arch import grouped_level_costs
from compile.model import DenseIncrementalNet, GroupedNet, count_macs, count_params


@pytest.mark.parametrize("cls", [GroupedNet, DenseIncrementalNet])
def test_level_k_never_reads_groups_above_k(cls):
    torch.manual_seed(0)
    m = cls(groups=4).eval()
    x = torch.randn(3, 3, 32, 32)
    before = [m(x, k) for k in range(1, 5)]
    with torch.no_grad():  # scramble everything that belongs to groups 3 and 4
        for g in (3, 4):
            for p in m.group_parameters(g):
                p.add_(torch.randn_like(p))
    after = [m(x, k) for k in range(1, 5)]
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert not torch.allclose(before[3], after[3])


def test_grouped_level_is_mean_of_independent_group_paths():
    torch.manual_seed(0)
    m = GroupedNet(groups=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        contrib = [m.group_logits(x, g) for g in (1, 2, 3)]
        for k in (1, 2, 3):
            assert torch.allclose(m(x, k), sum(contrib[:k]) / k, atol=1e-6)
            assert torch.allclose(m.all_levels(x)[k - 1], m(x, k), atol=1e-6)


@pytest.mark.parametrize("groups", [2, 5, 8])
def test_params_and_macs_grow_linearly_with_level_and_match_the_layer_table(groups):
    m = GroupedNet(groups=groups)
    table = grouped_level_costs("alexnet-cifar", groups)
    for level, params, macs in table:
        assert count_params(m, level) == params
        assert count_macs(m, level) == macs


def test_dense_baseline_costs_grow_faster_than_grouped():
    g, d = GroupedNet(groups=4), DenseIncrementalNet(groups=4)
    assert count_macs(d, 1) == count_macs(g, 1)
    assert count_macs(d, 4) > 2 * count_macs(g, 4)
