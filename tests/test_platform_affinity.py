"""Task mapping: pinning the process (and its threads) to a cluster's CPUs, and restoring it."""
import os
import threading

import pytest

from fake_sysfs import board_file, make_nano
from runtime.platform import Platform, PlatformError

ALLOWED = sorted(os.sched_getaffinity(0))


def two_cluster_board(tmp_path):
    """The Nano board file with clusters over CPUs this machine really has."""
    first, last = ALLOWED[:1], ALLOWED[-1:]
    return board_file(tmp_path, "jetson-nano", [
        {"name": "c0", "aliases": ["little"], "cpus": first,
         "policy_candidates": ["sys/devices/system/cpu/cpufreq/policy0"]},
        {"name": "c1", "aliases": ["big"], "cpus": last, "policy_candidates": []},
    ])


def test_pin_sets_affinity_of_process_and_threads_and_close_restores(tmp_path):
    make_nano(tmp_path)
    original = os.sched_getaffinity(0)
    seen = {}
    ready, go = threading.Event(), threading.Event()

    def worker():
        ready.set()
        go.wait(5)
        seen["worker"] = os.sched_getaffinity(0)

    t = threading.Thread(target=worker)
    t.start()
    ready.wait(5)
    with Platform.open(board=two_cluster_board(tmp_path), sysfs_root=str(tmp_path),
                       state_dir=str(tmp_path / "s"), signals=False) as p:
        assert p.cores("big") == 1
        assert p.pin("big") == frozenset(ALLOWED[-1:])
        assert os.sched_getaffinity(0) == set(ALLOWED[-1:])
        go.set()
        t.join(5)
        assert seen["worker"] == set(ALLOWED[-1:])  # an already-running thread moved too
        p.pin("c0")
        assert os.sched_getaffinity(0) == set(ALLOWED[:1])
    assert os.sched_getaffinity(0) == original


def test_unpin_and_restore_put_the_original_affinity_back(tmp_path):
    make_nano(tmp_path)
    original = os.sched_getaffinity(0)
    p = Platform.open(board=two_cluster_board(tmp_path), sysfs_root=str(tmp_path),
                      state_dir=str(tmp_path / "s"), signals=False)
    p.pin("little")
    p.unpin()
    assert os.sched_getaffinity(0) == original
    p.pin("little")
    p.restore()
    assert os.sched_getaffinity(0) == original
    p.close()


def test_pinning_to_cpus_that_do_not_exist_is_a_clear_error(tmp_path):
    make_nano(tmp_path)
    original = os.sched_getaffinity(0)
    missing = max(os.cpu_count() or 1, max(ALLOWED) + 1) + 64
    path = board_file(tmp_path, "jetson-nano", [
        {"name": "ghost", "cpus": [missing], "policy_candidates": []}])
    with Platform.open(board=path, sysfs_root=str(tmp_path), state_dir=str(tmp_path / "s"), signals=False) as p:
        with pytest.raises(PlatformError, match=r"cannot pin to cluster ghost CPUs \[%d\]" % missing):
            p.pin("ghost")
    assert os.sched_getaffinity(0) == original


def test_generic_board_pins_over_all_allowed_cpus(tmp_path):
    with Platform.open(sysfs_root=str(tmp_path), state_dir=str(tmp_path / "s")) as p:
        assert p.pin("big") == frozenset(ALLOWED)
        assert p.cores("cpu") == len(ALLOWED)
