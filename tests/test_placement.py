"""Placements (issue 14): groups of a level on several PEs give the sequential logits; bad ones are one line."""
import os
import sys
import threading
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

import runtime  # noqa: E402
from runtime.errors import RuntimeUserError  # noqa: E402
from runtime.placement import BoardView, parse  # noqa: E402

BUNDLE = os.path.join(REPO, "artifacts", "host-cpu")
# An ONNX PE computes a level as one graph, which stands for groups 1..j only where the level weights are
# the plain mean: the paper's bundle has them, the default's are fitted per level.
PAPER_BUNDLE = os.path.join(REPO, "artifacts", "paper", "host-cpu")
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
needs_two = pytest.mark.skipif(not TWO_CPUS, reason="placements over cpu:0 and cpu:1 need two usable CPUs")


@pytest.fixture(scope="module")
def model():
    m = runtime.load(BUNDLE, threads=1)
    yield m
    m.close()


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.RandomState(14)
    return {b: rng.randn(b, 3, 32, 32).astype(np.float32) for b in (1, 5, 32)}


@pytest.fixture(scope="module")
def sequential(model, inputs):
    return {(k, b): model.infer(x, k) for k in model.levels for b, x in inputs.items()}


def _splits(level):
    """Every way to put groups 1..level on cpu:0 and cpu:1 with both PEs used."""
    for mask in range(1, 2 ** level - 1):
        a = [g for g in range(1, level + 1) if mask >> (g - 1) & 1]
        yield {"cpu:0": a, "cpu:1": [g for g in range(1, level + 1) if g not in a]}


@needs_two
def test_every_two_pe_split_is_bit_identical_to_the_sequential_run(model, inputs, sequential):
    for level in model.levels[1:]:
        for placement in _splits(level):
            model.set_operating_point(level=level, placement=placement)
            for b, x in inputs.items():
                np.testing.assert_array_equal(model.infer(x), sequential[(level, b)], err_msg=str(placement))
    model.set_operating_point(placement=None)


@needs_two
def test_onnx_on_one_cpu_and_tflite_on_the_other_match_within_1e5(inputs, tmp_path):
    model = runtime.load(PAPER_BUNDLE, threads=1)
    sequential = {(k, b): model.infer(x, k) for k in model.levels for b, x in inputs.items()}
    for level, j in ((2, 1), (3, 1), (4, 2), (4, 3)):
        placement = {"cpu:0/onnx": list(range(1, j + 1)),
                     "cpu:1": {"groups": list(range(j + 1, level + 1)), "engine": "tflite", "threads": 1}}
        model.set_operating_point(level=level, placement=placement)
        assert model.placement["cpu:0"]["engine"] == "onnx"
        for b, x in inputs.items():
            np.testing.assert_allclose(model.infer(x), sequential[(level, b)], rtol=1e-5, atol=1e-5)
    model.close()


def test_an_onnx_pe_is_refused_where_its_level_graph_cannot_stand_for_part_of_a_level(model):
    # the shipped default has level heads: ONNX's level-2 graph has level 2's head, not level 4's share
    with pytest.raises(RuntimeUserError, match="own heads, so onnx's level-2 graph cannot stand for groups 1..2"):
        model.set_operating_point(level=4, placement={"cpu:0/onnx": [1, 2], "cpu:1": [3, 4]})
    assert model.placement is None


def test_one_pe_holding_every_group_matches_the_default_path(model, inputs, sequential):
    model.set_operating_point(level=3, placement={"cpu:0": [1, 2, 3]})
    np.testing.assert_array_equal(model.infer(inputs[32]), sequential[(3, 32)])
    model.set_operating_point(placement=None)
    assert model.placement is None


@needs_two
def test_switching_back_to_a_used_placement_costs_microseconds_and_starts_no_thread(model):
    a, b = {"cpu:0": [1, 2], "cpu:1": [3, 4]}, {"cpu:0": [1, 3], "cpu:1": [2, 4]}
    model.set_operating_point(level=4, placement=a)
    model.set_operating_point(level=4, placement=b)
    threads = threading.active_count()
    times = []
    for i in range(50):
        t = time.perf_counter()
        model.set_operating_point(level=4, placement=a if i % 2 else b)
        times.append(time.perf_counter() - t)
    assert threading.active_count() == threads
    assert np.median(times) < 500e-6  # measured 7 us on 2 loaded cores; a re-parse and warm-up takes ms
    model.set_operating_point(placement=None)


@needs_two
def test_each_worker_runs_pinned_to_its_own_cpus(model):
    if not hasattr(threading.Thread, "native_id"):
        pytest.skip("Thread.native_id needs Python 3.8")
    model.set_operating_point(level=4, placement={"cpu:0": [1, 2], "cpu:1": [3, 4]})
    pinned = {w.pe.name: os.sched_getaffinity(w.thread.native_id) for w in model._pool._workers.values()}
    assert pinned["cpu:0"] == {0} and pinned["cpu:1"] == {1}
    assert os.sched_getaffinity(0) != {0}  # the calling thread is left alone
    model.set_operating_point(placement=None)


@needs_two
def test_workers_take_their_cpus_back_after_a_cluster_pin_moved_every_thread(tmp_path):
    if not hasattr(threading.Thread, "native_id"):
        pytest.skip("Thread.native_id needs Python 3.8")
    split = {"cpu:0": {"groups": [1, 2], "engine": "onnx"}, "cpu:1": [3, 4]}
    with runtime.load(PAPER_BUNDLE, threads=1, state_dir=str(tmp_path), dvfs=False) as m:
        m.set_operating_point(level=4, placement=split)
        m.set_operating_point(cluster="all")  # the generic board's one cluster: every CPU, every thread
        assert m.placement is None
        workers = list(m._pool._workers.values())
        assert all(os.sched_getaffinity(w.thread.native_id) == set(m.platform.cluster_cpus("all")) for w in workers)
        m.set_operating_point(placement=split)
        m.infer(np.zeros((1, 3, 32, 32), np.float32))
        for w in workers:
            for tid in (w.thread.native_id,) + w._engine_tids:
                assert os.sched_getaffinity(tid) == set(w.pe.cpus)


@needs_two
def test_a_new_level_without_placement_runs_on_one_pe_and_infer_at_another_level_too(model, inputs, sequential):
    model.set_operating_point(level=4, placement={"cpu:0": [1, 2], "cpu:1": [3, 4]})
    np.testing.assert_array_equal(model.infer(inputs[1], level=2), sequential[(2, 1)])
    model.set_operating_point(cpu_freq_khz=None)  # no placement given: kept at the same level
    assert model.placement is not None
    model.set_level(3)
    assert model.placement is None
    np.testing.assert_array_equal(model.infer(inputs[5]), sequential[(3, 5)])


@pytest.mark.parametrize("placement, words", [
    ({"cpu:0": [1, 2], "cpu:1": [3, 5]}, "group 5, which is not in level 4"),
    ({"cpu:0": [1, 2], "cpu:9": [3, 4]}, "names CPU [9], which this board does not have online"),
    ({"cpu:0": [1, 2], "a15": [3, 4]}, "names PE 'a15', which this board (generic) does not have"),
    ({"gpu": [1, 2, 3, 4]}, "this board has no GPU"),
    ({"cpu:0": [1, 2], "cpu:1": [2, 3, 4]}, "puts group 2 on two PEs"),
    ({"cpu:0": [1, 2], "cpu:1": [3]}, "leaves group [4] of level 4 on no PE"),
    ({"cpu:0": [1, 2], "cpu:0/onnx": [3, 4]}, "names PE cpu:0 twice"),
    ({"cpu:0-1": [1, 2], "cpu:1": [3, 4]}, "share CPU 1"),
    ({"cpu:0": [1, 2], "cpu:1/onnx": [3, 4]}, "can hold groups 1..j of the level only"),
    ({"cpu:0": [1, 2], "cpu:1/tensorrt": [3, 4]}, "does not run on CPUs"),
    ({"cpu:0": [1, 2], "cpu:1": {"groups": [3, 4], "threads": 2}}, "threads must be an integer from 1 to 1"),
    ({"cpu:0": [1, 2], "cpu:1": [3, 4.0]}, "group 4.0, which is not in level 4"),
    ({"cpu:x": [1, 2, 3, 4]}, "is not a CPU set"),
    ([1, 2], "must be a non-empty dict"),
])
def test_a_bad_placement_is_one_line_and_leaves_the_current_one(model, placement, words):
    model.set_operating_point(level=4, placement=None)
    with pytest.raises(RuntimeUserError) as exc:
        model.set_operating_point(level=4, placement=placement)
    assert words in str(exc.value) and "\n" not in str(exc.value)
    assert model.placement is None


def test_cluster_and_placement_in_one_call_are_refused(model):
    with pytest.raises(RuntimeUserError, match="cluster= pins the whole process"):
        model.set_operating_point(level=2, cluster="all", placement={"cpu:0": [1, 2]})


class _Board(object):
    """A platform as parse() sees it: an XU3's clusters and its GPU, without touching a CPU."""
    clusters = {"a7": (0, 1, 2, 3), "a15": (4, 5, 6, 7)}
    alias = {"little": "a7", "big": "a15", "a7": "a7", "a15": "a15"}
    gpu = object()

    def cluster(self, name):
        if name not in self.alias:
            raise RuntimeUserError("no cluster %r" % name)
        return self.alias[name]

    def cluster_cpus(self, name):
        return self.clusters[name]


XU3 = BoardView(range(8), _Board)
UNIFORM = ([None] * 4, [1.0, 0.5, 1 / 3.0, 0.25])


def test_board_clusters_and_aliases_name_pes_with_a_thread_per_cpu():
    parts = parse({"big": [2, 3], "a7/onnx": {"groups": [1], "threads": 2}}, 3, XU3, "tflite", *UNIFORM)
    got = [(p.pe.name, sorted(p.pe.cpus), p.pe.engine, p.pe.threads, p.groups) for p in parts]
    assert got == [("a7", [0, 1, 2, 3], "onnx", 2, (1,)), ("a15", [4, 5, 6, 7], "tflite", 4, (2, 3))]


def test_the_gpu_runs_tensorrt_only_and_only_when_the_bundle_carries_it():
    parts = parse({"gpu": [1, 2], "a15": [3]}, 3, XU3, "tflite", *UNIFORM, engines=("onnx", "tensorrt", "tflite"))
    assert parts[0].pe.engine == "tensorrt" and not parts[0].pe.cpus
    with pytest.raises(RuntimeUserError, match="does not carry"):
        parse({"gpu": [1, 2], "a15": [3]}, 3, XU3, "tflite", *UNIFORM, engines=("onnx", "tflite"))
    with pytest.raises(RuntimeUserError, match="runs TensorRT only"):
        parse({"gpu/onnx": [1, 2], "a15": [3]}, 3, XU3, "tflite", *UNIFORM)


def test_a_level_engine_prefix_is_refused_where_the_bundle_weighs_its_groups_unlike_the_level():
    scale = [1.0, 0.5, 1 / 3.0, 0.25]
    learned = [np.array([1.0]), np.array([0.7, 0.3]), np.array([0.5, 0.3, 0.2]), np.array([0.35, 0.21, 0.14, 0.3])]
    with pytest.raises(RuntimeUserError, match="weighs groups 1..2 differently at level 3"):
        parse({"a7/onnx": [1, 2], "a15": [3]}, 3, XU3, "tflite", learned, scale)
    assert len(parse({"a7/onnx": [1], "a15": [2, 3]}, 3, XU3, "tflite", learned, scale)) == 2  # one group
    # level 4 weighs groups 1..3 as 0.7 x level 3: level 3's graph stands for them
    assert len(parse({"a7/onnx": [1, 2, 3], "a15": [4]}, 4, XU3, "tflite", learned, scale)) == 2


@needs_two
def test_close_stops_every_worker_thread():
    m = runtime.load(BUNDLE, threads=1)
    m.set_operating_point(level=4, placement={"cpu:0": [1, 2], "cpu:1": [3, 4]})
    workers = [w.thread for w in m._pool._workers.values()]
    m.close()
    assert workers and not any(t.is_alive() for t in workers)
    with pytest.raises(RuntimeUserError, match="closed"):
        m.infer(np.zeros((1, 3, 32, 32), np.float32))

