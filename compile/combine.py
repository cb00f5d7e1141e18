"""Per-level combination weights: level k = sum_{g<=k} w[k-1][g-1] * contribution_g.

--combine mean keeps w[k-1] = 1/k (the paper model). --combine heads fits the weights, then level k's head. --combine fitted chooses level k's k weights
right after step k is trained, by minimising the cross-entropy of the combined logits on a fixed
held-out slice of the training set (never the test set); the weights of lower levels are never
touched again, so level k-1 stays what it was when step k starts.
"""
import math

import torch
import torch.nn.functional as F

COMBINES = ("mean", "fitted", "heads")  # heads: fitted weights, then a level head (compile/level_heads.py)
HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX = 5000  # plenty to fit k <= 8 numbers
PULL = 0.05  # weight of the penalty on log(w) - log(1/k)


def holdout_split(data, combine, seed, fraction=None):
    """(train indices or None for all, held-out indices): a seeded, class-blind slice for fitting weights,
    `fraction` of the training set (HOLDOUT_FRACTION when None), at most HOLDOUT_MAX images."""
    if combine == "mean":
        return None, torch.zeros(0, dtype=torch.long)
    n = len(data.train_x)
    n_hold = max(1, min(HOLDOUT_MAX, int(n * (HOLDOUT_FRACTION if fraction is None else fraction))))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7 + 3))
    return perm[n_hold:].sort().values, perm[:n_hold].sort().values


@torch.no_grad()
def _contributions(model, level, norm, x, y, idx):
    model.eval()
    cs, ys = [], []
    for i in range(0, len(idx), 500):
        part = idx[i:i + 500]
        xb = norm(x[part]).to(next(model.parameters()).device).contiguous(memory_format=torch.channels_last)
        if hasattr(model, "group_contributions"):
            cs.append(torch.stack(model.group_contributions(xb, level)))
        else:
            cs.append(torch.stack([model.group_logits(xb, g) for g in range(1, level + 1)]))
        ys.append(y[part])
    return torch.cat(cs, 1).cpu(), torch.cat(ys)


def fit_level_weights(model, level, norm, x, y, idx, iters=100):
    """The `level` weights of level `level` fitted on images x[idx] (starting from the mean, 1/k each)."""
    c, labels = _contributions(model, level, norm, x, y, idx)
    # w = exp(a): positive weights (a negative weight would let a group vote against its own evidence);
    # the pull towards the mean keeps a small held-out slice from driving the weights to extremes.
    a0 = torch.full((level,), -math.log(level))
    a = a0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([a], lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(torch.einsum("g,gnc->nc", a.exp(), c), labels) + PULL * ((a - a0) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    out = [float(v) for v in a.detach().exp()]
    if not all(v == v and abs(v) < 1e6 for v in out):  # a diverged fit: keep the mean rather than garbage
        return [1.0 / level] * level
    return out
