"""Per-level combination weights: level k = sum_{g<=k} w[k-1][g-1] * contribution_g.

--combine mean keeps w[k-1] = 1/k (the shipped models). --combine fitted chooses level k's k weights
right after step k is trained, by minimising the cross-entropy of the combined logits on a fixed
held-out slice of the training set (never the test set); the weights of lower levels are never
touched again, so level k-1 stays what it was when step k starts.
"""
import torch
import torch.nn.functional as F

COMBINES = ("mean", "fitted")
HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX = 5000  # plenty to fit k <= 8 numbers


def holdout_split(data, combine, seed):
    """(train indices or None for all, held-out indices): a seeded, class-blind slice for fitting weights."""
    if combine != "fitted":
        return None, torch.zeros(0, dtype=torch.long)
    n = len(data.train_x)
    n_hold = max(1, min(HOLDOUT_MAX, int(n * HOLDOUT_FRACTION)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7 + 3))
    return perm[n_hold:].sort().values, perm[:n_hold].sort().values


@torch.no_grad()
def _contributions(model, level, norm, x, y, idx):
    model.eval()
    cs, ys = [], []
    for i in range(0, len(idx), 500):
        part = idx[i:i + 500]
        xb = norm(x[part]).contiguous(memory_format=torch.channels_last)
        if hasattr(model, "group_contributions"):
            cs.append(torch.stack(model.group_contributions(xb, level)))
        else:
            cs.append(torch.stack([model.group_logits(xb, g) for g in range(1, level + 1)]))
        ys.append(y[part])
    return torch.cat(cs, 1), torch.cat(ys)


def fit_level_weights(model, level, norm, x, y, idx, iters=100):
    """The `level` weights of level `level` fitted on images x[idx] (starting from the mean, 1/k each)."""
    c, labels = _contributions(model, level, norm, x, y, idx)
    w = torch.full((level,), 1.0 / level, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(torch.einsum("g,gnc->nc", w, c), labels)
        loss.backward()
        return loss

    opt.step(closure)
    out = [float(v) for v in w.detach()]
    if not all(v == v and abs(v) < 1e6 for v in out):  # a diverged fit: keep the mean rather than garbage
        return [1.0 / level] * level
    return out
