"""Tiny generated image-folder data sets (PNG files) for the architecture tests; nothing from ../shared."""
import os

import numpy as np


def make_image_folder(root, classes=3, size=16, channels=3, n_train=24, n_test=12, seed=0):
    """A learnable set: class c brightens a band of rows at c/classes of the height (grey or colour)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            c = i % classes
            x = rng.integers(0, 80, (size, size, channels)).astype(np.int32)
            band = slice(c * size // classes, (c + 1) * size // classes)
            x[band] += 150
            img = x.clip(0, 255).astype(np.uint8)
            d = os.path.join(root, split, "class%d" % c)
            os.makedirs(d, exist_ok=True)
            Image.fromarray(img[:, :, 0] if channels == 1 else img, "L" if channels == 1 else "RGB").save(
                os.path.join(d, "%03d.png" % i))
    return root
