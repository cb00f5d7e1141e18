"""bench/parallel.py (issue 14): one quick run measures the split, the two references and the hand-off."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench import parallel  # noqa: E402
from compile.errors import UserError  # noqa: E402

BUNDLE = os.path.join(REPO, "artifacts", "host-cpu")
QUICK = dict(rounds=3, target_s=0.003, warmup=1)
PEAKS = [{"threads": 2, "peak_macs_per_s": 50e9}]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the split needs two usable CPUs")
def test_quick_run_times_split_one_core_and_two_threads_and_the_split_computes_the_same_logits():
    logs = []
    res = parallel.measure_parallel(BUNDLE, (3, 32, 32), 30675968, PEAKS, [1, 32], QUICK, logs.append)
    # the split is the profiler's first proposal from the per-group times it recorded (with the shipped
    # default's unequal groups that puts group 4, 55% of the MACs, alone on a CPU when the machine is quiet)
    from runtime.placement_profile import propose
    ch = res["chosen_by"]
    (_, want), = propose(4, ch["group_ms"], ch["handoff_ms"], 1)
    assert {k: v["groups"] for k, v in res["placement"].items()} == want
    assert sorted(res["placement"]) == ["cpu:%d" % c for c in sorted(os.sched_getaffinity(0))[:2]]
    for b in ("1", "32"):
        row = res["batches"][b]
        assert row["max_abs_diff_vs_one_core"] == 0.0  # same engine, same groups: bit-identical
        assert row["split"]["n"] == 3 and row["split_vs_one_core"]["median"] > 0
    assert 0 < res["handoff"]["median"] < 0.05
    best = min(res["batches"]["1"]["split"]["median"], res["batches"]["1"]["two_threads"]["median"])
    assert res["peak_fraction_b1"]["fraction"] == pytest.approx(30675968 / best / 50e9)
    names = [c["name"] for c in parallel.checks(res)]
    assert len(names) == 4 and all(isinstance(c["ok"], bool) for c in parallel.checks(res))
    text = "\n".join(parallel.report_section({"parallel": res}))
    assert "| 32 |" in text and "Hand-off" in text
    assert any("hand-off" in line for line in logs)


def test_the_default_split_needs_two_cpus():
    assert parallel.default_split(None, [0], None, 1) == (None, None)


def test_a_bad_split_option_is_one_line():
    with pytest.raises(UserError, match="--split is not JSON"):
        parallel.parse_split("{cpu:0: [1]}")
    with pytest.raises(UserError, match="must be a JSON object"):
        parallel.parse_split("[1, 2]")
    assert parallel.parse_split('{"cpu:0": [1, 2]}') == {"cpu:0": [1, 2]}


def test_a_skipped_section_says_why_in_the_report_and_adds_no_check():
    res = {"skipped": "needs two usable CPUs (this process may use [0])"}
    assert parallel.checks(res) == []
    assert "Not measured: needs two usable CPUs" in "\n".join(parallel.report_section({"parallel": res}))
