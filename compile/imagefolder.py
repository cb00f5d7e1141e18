"""The class-per-folder image data set: DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg.

Images are resized to the model's square input and kept as uint8 [N, C, H, W] (C = 1 for grey, 3 for
colour). A set whose float copy would not fit comfortably in memory is decoded once into a uint8
.npy cache on disk (with a progress bar) and memory-mapped from then on: training gathers one batch
at a time from it, so only uint8 pages are ever resident.
"""
import hashlib
import json
import os

import numpy as np

from compile.errors import UserError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")
CACHE_MODES = ("auto", "always", "never")
MAX_CLASSES = 1000


def list_split(root, split, classes=None):
    """([(path, label)], classes) of one split, in a fixed order (class, then file name)."""
    base = os.path.join(root, split)
    if not os.path.isdir(base):
        raise UserError("%s has no %s/ folder; an image-folder data set needs train/<class>/*.jpg and "
                        "test/<class>/*.jpg" % (root, split))
    found = sorted(e for e in os.listdir(base) if os.path.isdir(os.path.join(base, e)))
    if classes is None:
        classes = found
    elif found != classes:
        raise UserError("%s/ has classes %s but train/ has %s; both splits need the same class folders"
                        % (base, found[:5], classes[:5]))
    if not 2 <= len(classes) <= MAX_CLASSES:
        raise UserError("%s needs 2 to %d class folders, found %d" % (base, MAX_CLASSES, len(classes)))
    entries = [(os.path.join(base, cls, name), label) for label, cls in enumerate(classes)
               for name in sorted(os.listdir(os.path.join(base, cls))) if name.lower().endswith(IMAGE_EXTS)]
    if not entries:
        raise UserError("no images (%s) under %s" % ("/".join(IMAGE_EXTS), base))
    return entries, classes


def detect_channels(path):
    """1 when the image is greyscale, else 3 (colour, alpha dropped)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return 1 if im.mode in GREY_MODES else 3
    except (OSError, Image.DecompressionBombError) as exc:
        raise UserError("cannot read image %s (%s); remove it or replace it" % (path, exc))


def load_image(path, size, channels=3):
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (OSError, Image.DecompressionBombError) as exc:  # a bomb: far more pixels than PIL's safety limit
        raise UserError("cannot read image %s (%s); remove it or replace it" % (path, exc))
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def _cache_key(entries, size, channels):
    h = hashlib.sha256(json.dumps([size, channels]).encode())
    for path, label in entries:
        st = os.stat(path)
        h.update(("%s\0%d\0%d\0%d\n" % (path, label, st.st_size, st.st_mtime_ns)).encode())
    return h.hexdigest()[:20]


def _too_big_for_memory(n, size, channels):
    """True when the float32 copy of the set would take over a quarter of this machine's memory."""
    try:
        mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return False
    return n * channels * size * size * 4 > mem // 4


def _decode_into(entries, out, size, channels, desc):
    from tqdm import tqdm
    for i, (path, _) in enumerate(tqdm(entries, desc=desc, unit="img", leave=False, dynamic_ncols=True,
                                      disable=None)):
        out[i] = load_image(path, size, channels)


def _cached(entries, size, channels, cache_dir, split):
    """A memory-mapped uint8 array of the split, decoded into cache_dir once (keyed by files, size, channels)."""
    path = os.path.join(cache_dir, "%s-%dpx-%dch-%s.npy" % (split, size, channels, _cache_key(entries, size, channels)))
    if not os.path.isfile(path):
        try:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = "%s.part-%d" % (path, os.getpid())
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                            shape=(len(entries), channels, size, size))
        except OSError as exc:
            raise UserError("cannot write the image cache under %s (%s); pass a writable --cache-dir"
                            % (cache_dir, exc.strerror))
        try:
            _decode_into(entries, arr, size, channels, "caching %s (once)" % split)
            arr.flush()
            del arr
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return np.load(path, mmap_mode="c")  # copy-on-write: torch wants a writable array, the file stays as is


def read_split(entries, size, channels, cache_dir=None, cache="auto", split="train"):
    """uint8 [N, C, size, size] (in memory, or memory-mapped from the cache) and int64 labels."""
    labels = np.asarray([lab for _, lab in entries], dtype=np.int64)
    use_cache = cache == "always" or (cache == "auto" and _too_big_for_memory(len(entries), size, channels))
    if use_cache:
        if not cache_dir:
            raise UserError("the image set is too large to hold in memory as float; pass --cache-dir DIR for "
                            "its uint8 cache")
        return _cached(entries, size, channels, cache_dir, split), labels
    out = np.empty((len(entries), channels, size, size), np.uint8)
    _decode_into(entries, out, size, channels, "reading %s" % split)
    return out, labels


def load_image_folder(root, size=32, channels=None, cache_dir=None, cache="auto"):
    """(train_x, train_y, test_x, test_y, classes); channels None = 1 if the first image is grey, else 3."""
    if cache not in CACHE_MODES:
        raise UserError("--cache must be one of %s, got %r" % (", ".join(CACHE_MODES), cache))
    train, classes = list_split(root, "train")
    test, _ = list_split(root, "test", classes)
    channels = channels or detect_channels(train[0][0])
    if channels not in (1, 3):
        raise UserError("--channels must be 1 or 3, got %s" % channels)
    tx, ty = read_split(train, size, channels, cache_dir, cache, "train")
    vx, vy = read_split(test, size, channels, cache_dir, cache, "test")
    return tx, ty, vx, vy, classes
