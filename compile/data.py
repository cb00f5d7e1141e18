"""Image classification data: CIFAR-10's python batches or a class-per-folder image tree.

Both give uint8 [N, C, H, W] tensors plus int64 labels (an image set too large for memory is a
memory-mapped uint8 cache: compile/imagefolder.py); normalisation and augmentation run batched on
tensors, so training needs no DataLoader workers on a 2-core machine. Nothing is downloaded.
"""
import hashlib
import io
import os
import pickle
from collections import namedtuple

import numpy as np
import torch

from compile.errors import UserError

Dataset = namedtuple("Dataset", "train_x train_y test_x test_y classes kind fingerprint")

CIFAR_DIR = "cifar-10-batches-py"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles; allow only what they hold (dicts, lists, numpy arrays), never code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError("refusing to load %s.%s" % (module, name))


def _read_cifar_batch(path):
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
        raise UserError("%s is not a readable CIFAR-10 batch (%s); extract CIFAR-10's python release "
                        "(cifar-10-python.tar.gz) again" % (path, exc))
    if len(data) != len(labels):
        raise UserError("%s: %d images but %d labels" % (path, len(data), len(labels)))
    return data, labels


def find_cifar_dir(root):
    for cand in (root, os.path.join(root, CIFAR_DIR)):
        if os.path.isfile(os.path.join(cand, "data_batch_1")) and os.path.isfile(os.path.join(cand, "test_batch")):
            return cand
    return None


def load_cifar10(root):
    d = find_cifar_dir(root)
    if d is None:
        raise UserError("no CIFAR-10 python batches in %s (expected %s/data_batch_1..5 and test_batch); "
                        "extract CIFAR-10's python release there (tar xzf cifar-10-python.tar.gz -C DIR), or pass an image "
                        "folder DIR/train/<class>/*.jpg + DIR/test/<class>/*.jpg" % (root, CIFAR_DIR))
    parts = [_read_cifar_batch(os.path.join(d, "data_batch_%d" % i)) for i in range(1, 6)
             if os.path.isfile(os.path.join(d, "data_batch_%d" % i))]
    tx, ty = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    vx, vy = _read_cifar_batch(os.path.join(d, "test_batch"))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return _make("cifar10", tx, ty, vx, vy, classes)


def load_image_folder(root, size=32, channels=None, cache_dir=None, cache="auto"):
    from compile.imagefolder import load_image_folder as read
    tx, ty, vx, vy, classes = read(root, size, channels, cache_dir, cache)
    return _make("image-folder", tx, ty, vx, vy, classes)


def _make(kind, tx, ty, vx, vy, classes):
    h = hashlib.sha256()
    for a in (tx, ty, vx, vy):  # chunk by chunk: a memory-mapped cache is never read into memory whole
        for i in range(0, len(a), 4096):
            h.update(np.ascontiguousarray(a[i:i + 4096]).tobytes())
    return Dataset(torch.from_numpy(tx), torch.from_numpy(ty), torch.from_numpy(vx), torch.from_numpy(vy),
                   list(classes), kind, h.hexdigest())


def load_dataset(root, kind="auto", size=32, channels=None, cache_dir=None, cache="auto"):
    if not os.path.isdir(root):
        raise UserError("data directory %s does not exist; pass --data DIR with CIFAR-10 batches or "
                        "train/<class>/ and test/<class>/ image folders" % root)
    if kind == "auto":
        kind = "cifar10" if find_cifar_dir(root) else "image-folder"
    if kind == "cifar10":
        if size != 32 or channels not in (None, 3):
            raise UserError("CIFAR-10 images are 32x32 RGB; --input-size %d / --channels %s needs an image-folder "
                            "data set" % (size, channels))
        return load_cifar10(root)
    return load_image_folder(root, size, channels, cache_dir, cache)


def channel_stats(x):
    """Per-channel mean and std of uint8 images, on the 0-1 scale (the model's normalisation)."""
    s = torch.zeros(x.shape[1], dtype=torch.float64)
    sq = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, len(x), 4096):  # in chunks: the set may be a memory-mapped cache
        xf = x[i:i + 4096].double().div_(255)
        s += xf.sum((0, 2, 3))
        sq += (xf * xf).sum((0, 2, 3))
    n = float(len(x) * x.shape[2] * x.shape[3])
    mean = s / n
    std = ((sq - n * mean * mean) / (n - 1)).clamp_min(0).sqrt()
    return mean.float().tolist(), std.float().tolist()


class Normalizer(object):
    def __init__(self, mean, std):
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, x_uint8):
        return (x_uint8.float().div_(255) - self.mean) / self.std


def augment(x, gen, pad=None, return_flip=False):
    """Random crop with reflect padding (1/8 of the image: 4 px at 32x32) and horizontal flip, batched;
    with return_flip, also which images were flipped (a teacher's cached targets follow the flip)."""
    n, _, h, w = x.shape
    pad = max(1, int(round(h / 8.0))) if pad is None else pad
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return (out, flip) if return_flip else out
