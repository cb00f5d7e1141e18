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


def golden_images(data_dir, n, size, channels=3, seed=0):
    """uint8 [n, size, size, channels]: real test images when a data set is at hand (more telling),
    otherwise seeded random ones. An image folder is sampled file by file, never loaded whole."""
    rng = np.random.default_rng(seed)
    if not data_dir:
        return rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    from compile.data import find_cifar_dir, load_cifar10
    if find_cifar_dir(data_dir):
        test_x = load_cifar10(data_dir).test_x.numpy()
        return test_x[rng.choice(len(test_x), n, replace=False)].transpose(0, 2, 3, 1).copy()
    from compile.imagefolder import list_split, load_image
    entries, _ = list_split(data_dir, "test")
    idx = rng.choice(len(entries), min(n, len(entries)), replace=False)
    return np.stack([load_image(entries[i][0], size, channels) for i in idx]).transpose(0, 2, 3, 1).copy()
