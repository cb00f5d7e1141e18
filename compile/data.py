"""Image classification data: CIFAR-10's python batches or a class-per-folder image tree.

Both load into memory as uint8 [N, 3, H, W] tensors plus int64 labels; augmentation runs batched
on tensors, so training needs no DataLoader workers on a 2-core machine. Nothing is downloaded.
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
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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
        raise UserError("%s is not a readable CIFAR-10 batch (%s); re-create it with "
                        "../shared/tools/cifar10_from_jpeg.py" % (path, exc))
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
                        "convert the JPEG archive with: python ../shared/tools/cifar10_from_jpeg.py DIR" % (root, CIFAR_DIR))
    parts = [_read_cifar_batch(os.path.join(d, "data_batch_%d" % i)) for i in range(1, 6)
             if os.path.isfile(os.path.join(d, "data_batch_%d" % i))]
    tx, ty = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    vx, vy = _read_cifar_batch(os.path.join(d, "test_batch"))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return _make("cifar10", tx, ty, vx, vy, classes)


def _load_image(path, size):
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, Image.DecompressionBombError) as exc:  # a bomb: far more pixels than PIL's safety limit
        raise UserError("cannot read image %s (%s); remove it or replace it" % (path, exc))


def _read_split(root, split, size, classes=None):
    base = os.path.join(root, split)
    if not os.path.isdir(base):
        raise UserError("%s has no %s/ folder; an image-folder data set needs train/<class>/*.jpg and "
                        "test/<class>/*.jpg" % (root, split))
    found = sorted(e for e in os.listdir(base) if os.path.isdir(os.path.join(base, e)))
    if classes is None:
        classes = found
    elif found != classes:
        raise UserError("%s/ has classes %s but train/ has %s; both splits need the same class folders"
                        % (base, found, classes))
    if len(classes) < 2:
        raise UserError("%s needs at least two class folders, found %d" % (base, len(classes)))
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(base, cls))):
            if name.lower().endswith(IMAGE_EXTS):
                xs.append(_load_image(os.path.join(base, cls, name), size))
                ys.append(label)
    if not xs:
        raise UserError("no images (%s) under %s" % ("/".join(IMAGE_EXTS), base))
    return np.stack(xs), np.asarray(ys, dtype=np.int64), classes


def load_image_folder(root, size=32):
    tx, ty, classes = _read_split(root, "train", size)
    vx, vy, _ = _read_split(root, "test", size, classes)
    return _make("image-folder", tx, ty, vx, vy, classes)


def _make(kind, tx, ty, vx, vy, classes):
    h = hashlib.sha256()
    for a in (tx, ty, vx, vy):
        h.update(np.ascontiguousarray(a).tobytes())
    return Dataset(torch.from_numpy(np.ascontiguousarray(tx)), torch.from_numpy(ty),
                   torch.from_numpy(np.ascontiguousarray(vx)), torch.from_numpy(vy),
                   list(classes), kind, h.hexdigest())


def load_dataset(root, kind="auto", size=32):
    if not os.path.isdir(root):
        raise UserError("data directory %s does not exist; pass --data DIR with CIFAR-10 batches or "
                        "train/<class>/ and test/<class>/ image folders" % root)
    if kind == "auto":
        kind = "cifar10" if find_cifar_dir(root) else "image-folder"
    if kind == "cifar10":
        if size != 32:
            raise UserError("CIFAR-10 images are 32x32; --input-size %d needs an image-folder data set" % size)
        return load_cifar10(root)
    return load_image_folder(root, size)


def channel_stats(x):
    """Per-channel mean and std of uint8 images, on the 0-1 scale (the model's normalisation)."""
    xf = x.float().div_(255)
    return xf.mean((0, 2, 3)).tolist(), xf.std((0, 2, 3)).tolist()


class Normalizer(object):
    def __init__(self, mean, std):
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, x_uint8):
        return (x_uint8.float().div_(255) - self.mean) / self.std


def augment(x, gen, pad=4):
    """Random crop with reflect padding and horizontal flip, batched, on a float NCHW tensor."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)
