"""Inference-ready copies of the trained model: BatchNorm folded into the convolutions, eval mode.

Both emitters (ONNX, TFLite) start from these, so every engine computes exactly the same function.
"""
import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from compile.errors import UserError
from compile.model import GroupedNet


def _fold(mod):
    """BatchNorm after a conv folded into it, in every Sequential at any depth (residual blocks included)."""
    if not isinstance(mod, nn.Sequential):
        for name, child in mod.named_children():
            setattr(mod, name, _fold(child))
        return mod
    mods, out = list(mod), []
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Conv2d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
            out.append(fuse_conv_bn_eval(m, mods[i + 1]))
            i += 2
            continue
        out.append(_fold(m))
        i += 1
    return nn.Sequential(*out)


class DeployPath(nn.Module):
    """One group path with BN folded: input -> unscaled logit contribution (with level heads: its
    contributions to levels g..G side by side, compile/level_heads.deploy_heads)."""

    def __init__(self, path, head=None):
        super().__init__()
        self.features = _fold(path.features)
        self.classifier = path.classifier
        self.head = path.head if head is None else head

    def forward(self, input):  # noqa: A002 - the name becomes the engine's input name
        return self.head(self.classifier(self.features(input)))


# litert-torch writes each tensor's module path, class qualname included, into the .tflite; keep the name
# the shipped bundles were built with (this class lived in compile/deploy.py) so they rebuild byte for byte.
DeployPath.__module__ = "compile.deploy"


class DeployLevel(nn.Module):
    """Level k of a grouped model as one network (for single-level reference files).

    scale: the uniform level's 1/k (a number), the level's k combination weights (a list), or {"classes": C}
    for level heads (each path's output holds its contributions to levels g..G: this level's slice is taken)."""

    def __init__(self, paths, scale):
        super().__init__()
        self.paths, self.scale = nn.ModuleList(paths), scale

    def forward(self, input):  # noqa: A002
        if isinstance(self.scale, dict):
            k, c = len(self.paths), self.scale["classes"]
            return sum(p(input)[:, (k - g) * c:(k - g + 1) * c] for g, p in enumerate(self.paths, 1))
        if isinstance(self.scale, (list, tuple)):
            return sum(p(input) * w for p, w in zip(self.paths, self.scale))
        out = self.paths[0](input)
        for p in self.paths[1:]:
            out = out + p(input)
        return out * self.scale


def deploy_paths(model):
    if not isinstance(model, GroupedNet):
        raise UserError("only grouped models compile to per-group engines; this checkpoint's scheme is not "
                        "'grouped' (train one with: python build.py train --scheme grouped)")
    model = copy.deepcopy(model).eval()
    heads = [None] * model.num_groups
    if model.has_heads():
        from compile.level_heads import deploy_heads
        heads = deploy_heads(model)
    with torch.no_grad():
        return [DeployPath(p, h).eval() for p, h in zip(model.groups, heads)]
