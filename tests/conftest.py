"""Shared fixtures: small generated data sets, a tiny trained checkpoint and bundles built from it.

Nothing here reads ../shared: CI may run without the real data.
"""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_cifar_like(root, n_train=256, n_test=128, seed=0):
    """A learnable 10-class toy set in CIFAR's python-batch layout: class = colour + stripe direction."""
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)

    def images(n):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 3, 32, 32))
        for i, c in enumerate(y):
            x[i, c % 3] += 120
            if c >= 5:
                x[i, :, ::4, :] += 60
            else:
                x[i, :, :, ::4] += 60 if c % 2 else 0
        return x.clip(0, 255).astype(np.uint8).reshape(n, -1), [int(v) for v in y]

    for name, n in (("data_batch_1", n_train), ("test_batch", n_test)):
        x, y = images(n)
        with open(os.path.join(d, name), "wb") as f:
            pickle.dump({b"data": x, b"labels": y}, f)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return make_cifar_like(str(tmp_path_factory.mktemp("data")))


def train_tiny(data, out, run_dir, groups=3, scheme="grouped", epochs=1, **over):
    from compile.data import load_dataset
    from compile.train import Trainer, default_config
    cfg = default_config(scheme=scheme, groups=groups, epochs=epochs, batch_size=32, **over)
    Trainer(cfg, load_dataset(data), run_dir, out, log=lambda *a: None, progress=False).run()
    return os.path.join(out, "model.safetensors")


def step_snapshots(monkeypatch):
    """Record the full model state each time a training step finishes."""
    snaps = {}
    from compile.train import Trainer
    orig = Trainer._save_state

    def spy(self, st, model, opt):
        if st["epoch"] == 0 and st["done"]:
            snaps[st["done"][-1]] = {k: v.clone() for k, v in model.state_dict().items()}
        return orig(self, st, model, opt)

    monkeypatch.setattr(Trainer, "_save_state", spy)
    return snaps


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return train_tiny(tiny_data, str(d / "out"), str(d / "run"), groups=3, epochs=2)


@pytest.fixture(scope="session")
def host_bundle(tiny_ckpt, tmp_path_factory):
    from compile.bundle import build_bundle
    out = str(tmp_path_factory.mktemp("bundles") / "host-cpu")
    build_bundle(tiny_ckpt, "host-cpu", out, log=lambda *a: None)
    return out


def run_cli(args, **kw):
    """Run a command line of this project; returns CompletedProcess with text output."""
    return subprocess.run([sys.executable] + args, cwd=kw.pop("cwd", ROOT), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, **kw)


def untrained_ckpt(groups, path):
    """A checkpoint of an untrained G-group model (for tests that need shapes, not accuracy)."""
    import torch
    from compile.arch import grouped_level_costs
    from compile.checkpoint import save_checkpoint
    from compile.model import GroupedNet
    torch.manual_seed(groups)
    m = GroupedNet(groups=groups).eval()
    meta = {"scheme": "grouped", "arch": "alexnet-cifar", "groups": groups, "num_classes": 10,
            "class_names": [str(i) for i in range(10)], "combine": "mean",
            "level_scale": [1.0 / k for k in range(1, groups + 1)],
            "input": {"size": 32, "channels": 3, "layout": "NCHW", "color": "RGB", "scale": 1 / 255.0,
                      "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            "levels": [{"level": k, "params": p, "macs": m_, "test_accuracy": 0.0}
                       for k, p, m_ in grouped_level_costs("alexnet-cifar", groups)]}
    return save_checkpoint(m, meta, path)
