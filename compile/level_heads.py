"""Per-level heads: level k = one linear head over the concatenated features of groups 1..k (issue 12).

Scalar combination weights (compile/combine.py) can only rescale each group's own 10 logits; a level head
reads the features under them (the hidden FC of every group path, a few hundred numbers), so level k can
weigh what group 3 learned against what group 1 learned class by class. It is fitted right after step k,
with groups 1..k frozen, so lower levels stay bit for bit and no group is retrained:
- start: exactly the level as combined so far (the groups' own heads times the level's weights);
- fit: cross-entropy on the training images the groups were trained on (eval mode, no augmentation), full
  batch L-BFGS, with an L2 pull towards the start; the pull is chosen from PULLS by accuracy on the
  held-out slice that --combine fitted keeps out of training (never the test set).
Measured on the shipped default (docs/training.md): +0.3 / +0.5 / +0.7 / +1.0 points at levels 1-4.

Deployed, group g's head becomes one Linear with (G-g+1) x classes outputs: its contribution to each level
g..G, level k's bias in group 1's (docs/bundle.md, "level heads"); runtime.backends.base.Combiner adds the
slices. No weight is stored twice and the engines need nothing new.
"""
import time

import torch
import torch.nn.functional as F
from torch import nn

PULLS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
LBFGS_ITERS = 200
CHUNK = 500


@torch.no_grad()
def group_features(model, norm, x, idx, upto):
    """[features of group g for images x[idx]] for g = 1..upto (eval mode, normalised, in chunks)."""
    model.eval()
    dev = next(model.parameters()).device
    out = [[] for _ in range(upto)]
    for i in range(0, len(idx), CHUNK):
        xb = norm(x[idx[i:i + CHUNK]]).to(dev).contiguous(memory_format=torch.channels_last)
        for g in range(upto):
            out[g].append(model.groups[g].embed(xb).float().cpu())
    return [torch.cat(o) for o in out]


def start_head(model, k):
    """(W, b) of level k as combined without a head: [w_g * head_g for g <= k] side by side."""
    w = model.level_weights[k - 1] if not model.is_uniform() else [1.0 / k] * k
    W = torch.cat([w[g] * model.groups[g].head.weight.detach().float().cpu() for g in range(k)], 1)
    b = sum(w[g] * model.groups[g].head.bias.detach().float().cpu() for g in range(k))
    return W, b


def _fit(X, y, W0, b0, pull):
    W, b = W0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=LBFGS_ITERS, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(X @ W.t() + b, y) + pull * ((W - W0) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def _acc(W, b, X, y):
    return float((X @ W.t() + b).argmax(1).eq(y).float().mean())


def fit_level_head(model, k, norm, x, y, train_idx, hold_idx, feats=None):
    """Fit level k's head in place (groups 1..k frozen) and mark it ready. Returns a record for the log and
    the checkpoint: the chosen pull and the held-out accuracy before and after. feats: (training, held-out)
    features of at least groups 1..k already extracted (group_features), else they are extracted here;
    `seconds` counts only what this call did."""
    t0 = time.time()
    feats_tr, feats_ho = feats or (group_features(model, norm, x, train_idx, k),
                                   group_features(model, norm, x, hold_idx, k))
    X, Xh = torch.cat(feats_tr[:k], 1), torch.cat(feats_ho[:k], 1)
    Y, Yh = y[train_idx], y[hold_idx]
    W0, b0 = start_head(model, k)
    best = None
    for pull in PULLS:
        W, b = _fit(X, Y, W0, b0, pull)
        acc = _acc(W, b, Xh, Yh)
        if W.isfinite().all() and (best is None or acc > best[0]):
            best = (acc, pull, W, b)
    acc, pull, W, b = best
    head = model.level_heads[k - 1]
    with torch.no_grad():
        head.weight.copy_(W.to(head.weight))
        head.bias.copy_(b.to(head.bias))
    model.heads_ready[k - 1] = True
    return {"level": k, "pull": pull, "held_out_before": round(_acc(W0, b0, Xh, Yh), 6),
            "held_out_after": round(acc, 6), "train_images": len(train_idx), "held_out_images": len(hold_idx),
            "seconds": round(time.time() - t0, 1)}


def head_record(fits):
    """The checkpoint sidecar's level_heads entry (compile/validate.check_sidecar reads it)."""
    return {"fits": list(fits), "pulls": list(PULLS), "features": "each group path's last hidden layer (its own "
            "head's input), eval mode, no augmentation", "solver": "L-BFGS, %d iterations" % LBFGS_ITERS}


def deploy_heads(model):
    """Per group g, the Linear that replaces its own head in the engines: rows (k-g)*C..(k-g+1)*C-1 are level
    k's head restricted to group g's features, for k = g..G; level k's bias sits in group 1's rows only, so
    level k's logits are the sum over g <= k of group g's slice k-g."""
    G, C = model.num_groups, model.level_heads[0].out_features
    dims = [p.head.in_features for p in model.groups]
    starts = [sum(dims[:g]) for g in range(G)]
    out = []
    for g in range(G):
        lin = nn.Linear(dims[g], (G - g) * C)
        with torch.no_grad():
            for k in range(g + 1, G + 1):
                head = model.level_heads[k - 1]
                rows = slice((k - 1 - g) * C, (k - g) * C)
                lin.weight[rows] = head.weight[:, starts[g]:starts[g] + dims[g]]
                lin.bias[rows] = head.bias if g == 0 else 0.0
        out.append(lin.eval())
    return out


def add_heads(checkpoint, data_dir, out_dir, log=print):
    """`python build.py heads`: fit the level heads of a checkpoint trained with --combine fitted, exactly as
    training with --combine heads fits them after each step (groups 1..k are frozen from step k on, so the
    final groups are what step k saw), and write it as a new checkpoint with its levels re-measured."""
    import copy
    import os

    from compile.checkpoint import load_checkpoint, resolve, save_checkpoint
    from compile.combine import holdout_split
    from compile.data import Normalizer, load_dataset
    from compile.errors import UserError
    from compile.model import GroupedNet
    from compile.train_record import evaluate_levels, write_summary
    src, meta = load_checkpoint(checkpoint)
    path = resolve(checkpoint)
    if not isinstance(src, GroupedNet) or meta.get("combine") != "fitted":
        raise UserError("%s: level heads are fitted on the held-out slice of a grouped checkpoint trained with "
                        "--combine fitted (this one: scheme %s, combine %s); train with --combine heads instead"
                        % (path, meta["scheme"], meta.get("combine", "mean")))
    data = load_dataset(data_dir, meta["data"]["kind"], int(meta["input"]["size"]),
                        None if int(meta["input"]["channels"]) == 3 else int(meta["input"]["channels"]))
    if data.fingerprint != meta["data"]["fingerprint"]:
        raise UserError("--data %s is not the data %s was trained on (fingerprint %s, the checkpoint records %s); "
                        "pass that data set" % (data_dir, path, data.fingerprint, meta["data"]["fingerprint"]))
    recipe = meta["training"]["recipe"]
    train_idx, hold_idx = holdout_split(data, "fitted", int(recipe["seed"]), recipe.get("holdout"))
    model = GroupedNet(src.spec, src.num_groups, int(meta["input"]["channels"]), int(meta["num_classes"]),
                       int(meta["input"]["size"]), src.widths, src.level_weights, level_heads=True)
    missing = model.load_state_dict(src.state_dict(), strict=False).missing_keys
    assert all(k.startswith("level_heads.") for k in missing), missing
    model = model.to(memory_format=torch.channels_last).eval()
    norm = Normalizer(meta["input"]["mean"], meta["input"]["std"])
    fits, G = [], model.num_groups
    # the final groups are frozen: extract every group's features once, not once per level that reads them
    feats = (group_features(model, norm, data.train_x, train_idx, G), group_features(model, norm, data.train_x, hold_idx, G))
    for k in range(1, G + 1):
        fits.append(fit_level_head(model, k, norm, data.train_x, data.train_y, train_idx, hold_idx, feats))
        log("level %d head (L2 pull %g chosen on %d held-out images): held-out accuracy %.2f%% -> %.2f%%"
            % (k, fits[-1]["pull"], len(hold_idx), 100 * fits[-1]["held_out_before"],
               100 * fits[-1]["held_out_after"]))
    accs = evaluate_levels(model, norm, data.test_x, data.test_y, model.num_groups)
    meta = copy.deepcopy(meta)
    for lv in meta["levels"]:
        lv["test_accuracy_without_heads"] = lv["test_accuracy"]
        lv["test_accuracy"] = round(accs[lv["level"] - 1], 6)
        log("level %d: test accuracy %.2f%% (was %.2f%% without its head)"
            % (lv["level"], 100 * lv["test_accuracy"], 100 * lv["test_accuracy_without_heads"]))
    meta["combine"] = meta["training"]["recipe"]["combine"] = "heads"
    meta["level_heads"] = dict(head_record(fits), added_by="python build.py heads (after training with --combine "
                               "fitted; the same fit --combine heads makes after each step)")
    for key in ("tensors", "format", "format_version"):
        meta.pop(key, None)
    out = save_checkpoint(model.to(memory_format=torch.contiguous_format), meta,
                          os.path.join(out_dir, "model.safetensors"))
    write_summary(meta, os.path.join(out_dir, "training.md"))
    return out
