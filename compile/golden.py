"""Golden vectors: fixed inputs and every level's expected logits, so a board can verify its engine."""
import numpy as np
import torch


def make_golden(model, normalise, images, levels):
    """images: uint8 [n, H, W, C]. Returns the arrays saved into golden.npz."""
    x = normalise(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    out = {"images": images, "input": x.numpy().astype(np.float32)}
    with torch.no_grad():
        for k, o in enumerate(model.all_levels(x, max(levels))):
            if k + 1 in levels:
                out["level%d" % (k + 1)] = o.numpy().astype(np.float32)
    return out


def golden_images(data_dir, n, size, seed=0):
    """Real test images when a data set is at hand (more telling), otherwise seeded random ones."""
    if data_dir:
        from compile.data import load_dataset
        ds = load_dataset(data_dir, "auto", size)
        idx = np.random.default_rng(seed).choice(len(ds.test_x), n, replace=False)
        return ds.test_x[idx].numpy().transpose(0, 2, 3, 1).copy()
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
