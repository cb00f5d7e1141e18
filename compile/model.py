"""The width-switchable grouped CNN and the dense-incremental baseline.

GroupedNet: G independent paths (group convolution taken to its end: group i of every layer reads
only group i below). Level k = mean of the logit contributions of paths 1..k, so nothing of groups
above k is read at level k and every path can run on its own — the compiler emits one engine
signature per path and the runtime sums them (../shared/docs/measured.md, TFLite memory).

DenseIncrementalNet: the Tann et al. 2016 baseline. Channels of group j in a layer read groups
1..j below (never later ones), so level k is still complete, but compute grows quadratically.
"""
import torch
from torch import nn

from compile.arch import check_arch


def _conv_block(cin, layer):
    mods = [nn.Conv2d(cin, layer.out, layer.kernel, padding=layer.kernel // 2, bias=False),
            nn.BatchNorm2d(layer.out), nn.ReLU(inplace=True)]
    if layer.pool:
        mods.append(nn.MaxPool2d(2))
    return nn.Sequential(*mods)


class GroupPath(nn.Module):
    """One group: a complete path from the input image to a [N, num_classes] logit contribution."""

    def __init__(self, arch, in_channels=3, num_classes=10, input_size=32):
        super().__init__()
        layers = check_arch(arch)
        convs, fcs = [], []
        c, hw = in_channels, input_size
        for layer in layers:
            if layer.kind == "conv":
                convs.append(_conv_block(c, layer))
                c = layer.out
                hw = hw // 2 if layer.pool else hw
            else:
                flat = c * hw * hw if not fcs else c
                fcs += [nn.Linear(flat, layer.out), nn.ReLU(inplace=True)]
                c = layer.out
        self.features = nn.Sequential(*convs)
        self.classifier = nn.Sequential(nn.Flatten(), *fcs)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.head(self.classifier(self.features(x)))


class GroupedNet(nn.Module):
    """G group paths; forward(x, level) averages paths 1..level."""

    def __init__(self, arch="alexnet-cifar", groups=4, in_channels=3, num_classes=10, input_size=32):
        super().__init__()
        self.arch, self.num_groups = arch, groups
        self.groups = nn.ModuleList(GroupPath(arch, in_channels, num_classes, input_size) for _ in range(groups))

    @staticmethod
    def level_scale(level):
        return 1.0 / level

    def group_logits(self, x, g):
        """Contribution of group g (1-based), before the level's scale."""
        return self.groups[g - 1](x)

    def forward(self, x, level=None):
        level = self.num_groups if level is None else level
        out = self.groups[0](x)
        for g in range(1, level):
            out = out + self.groups[g](x)
        return out * self.level_scale(level)

    def all_levels(self, x, upto=None):
        """Logits of levels 1..upto from one pass: each group runs once, contributions accumulate."""
        upto = self.num_groups if upto is None else upto
        outs, acc = [], None
        for g in range(upto):
            c = self.groups[g](x)
            acc = c if acc is None else acc + c
            outs.append(acc * self.level_scale(g + 1))
        return outs

    def group_parameters(self, g):
        return self.groups[g - 1].parameters()

    def group_modules(self, g):
        return [self.groups[g - 1]]


class _DenseLayer(nn.Module):
    """One layer of the dense-incremental net: out group j reads input groups 1..j."""

    def __init__(self, groups, cin_per_group, layer, first, conv):
        super().__init__()
        self.conv, self.first = conv, first
        blocks = []
        for j in range(1, groups + 1):
            cin = cin_per_group if first else cin_per_group * j
            if conv:
                blocks.append(_conv_block(cin, layer))
            else:
                blocks.append(nn.Sequential(nn.Linear(cin, layer.out), nn.ReLU(inplace=True)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, xs, level):
        """xs: per-group inputs, or the image itself for the first layer; returns `level` outputs."""
        if self.first:
            return [block(xs) for block in self.blocks[:level]]
        return [block(torch.cat(xs[:j + 1], 1) if j else xs[0]) for j, block in enumerate(self.blocks[:level])]


class DenseIncrementalNet(nn.Module):
    """Tann et al. 2016 style baseline with the same per-group widths as GroupedNet."""

    def __init__(self, arch="alexnet-cifar", groups=4, in_channels=3, num_classes=10, input_size=32):
        super().__init__()
        self.arch, self.num_groups = arch, groups
        layers = check_arch(arch)
        mods, c, hw, first, seen_fc = [], in_channels, input_size, True, False
        for layer in layers:
            if layer.kind == "conv":
                mods.append(_DenseLayer(groups, c, layer, first, conv=True))
                c = layer.out
                hw = hw // 2 if layer.pool else hw
            else:
                flat = c * hw * hw if not seen_fc else c
                mods.append(_DenseLayer(groups, flat, layer, first, conv=False))
                c, seen_fc = layer.out, True
            first = False
        self.layers = nn.ModuleList(mods)
        self.heads = nn.ModuleList(nn.Linear(c, num_classes) for _ in range(groups))

    @staticmethod
    def level_scale(level):
        return 1.0 / level

    def group_contributions(self, x, level):
        xs = x
        for i, layer in enumerate(self.layers):
            if not layer.conv and (i == 0 or self.layers[i - 1].conv):
                xs = [t.flatten(1) for t in xs]
            xs = layer(xs, level)
        return [self.heads[j](xs[j]) for j in range(level)]

    def forward(self, x, level=None):
        level = self.num_groups if level is None else level
        return sum(self.group_contributions(x, level)) * self.level_scale(level)

    def all_levels(self, x, upto=None):
        upto = self.num_groups if upto is None else upto
        outs, acc = [], None
        for j, c in enumerate(self.group_contributions(x, upto)):
            acc = c if acc is None else acc + c
            outs.append(acc * self.level_scale(j + 1))
        return outs

    def group_parameters(self, g):
        """Parameters that belong to group g: its block in every layer and its head."""
        for layer in self.layers:
            yield from layer.blocks[g - 1].parameters()
        yield from self.heads[g - 1].parameters()

    def group_modules(self, g):
        return [layer.blocks[g - 1] for layer in self.layers] + [self.heads[g - 1]]


def build_model(scheme, arch, groups, num_classes=10, input_size=32, in_channels=3):
    cls = DenseIncrementalNet if scheme == "dense" else GroupedNet
    return cls(arch, groups, in_channels, num_classes, input_size)


def count_params(model, level):
    """Deployed parameters of one level (BatchNorm folded: weight + one bias per channel)."""
    total = 0
    for g in range(1, level + 1):
        for mod in (model.groups[g - 1].modules() if isinstance(model, GroupedNet) else
                    [m for gm in model.group_modules(g) for m in gm.modules()]):
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                total += mod.weight.numel() + mod.out_channels if isinstance(mod, nn.Conv2d) else \
                    mod.weight.numel() + mod.out_features
    return total


def count_macs(model, level, input_size=32, in_channels=3):
    """Multiply-accumulates per image at one level, counted by hooks on a real forward pass."""
    macs = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            macs[0] += out.numel() // out.shape[0] * mod.weight[0].numel()
        elif isinstance(mod, nn.Linear):
            macs[0] += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_channels, input_size, input_size), level)
    model.train(was_training)
    for h in handles:
        h.remove()
    return macs[0]
