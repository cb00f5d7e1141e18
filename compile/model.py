"""The width-switchable grouped CNN and the dense-incremental baseline, built from a path spec.

GroupedNet: G independent paths (group convolution taken to its end: group g of every layer reads
only group g below); path g is the spec at channel multiplier widths[g-1]. Level k's logits are
sum_{g<=k} w[k-1][g-1] * contribution_g (level_weights; 1/k each by default), so nothing of groups
above k is read at level k and every path runs on its own — the compiler emits one engine signature
per path and the runtime combines them (../shared/docs/measured.md, TFLite memory).

DenseIncrementalNet: the Tann et al. 2016 baseline. Channels of group j in a layer read groups
1..j below (never later ones), so level k is still complete, but compute grows quadratically. It
supports plain specs only (conv, max pool, fc), which is what the baseline was defined on.
"""
import torch
from torch import nn

from compile.arch import load_spec, walk
from compile.errors import UserError

_ACT = {"relu": lambda: nn.ReLU(inplace=True), "relu6": lambda: nn.ReLU6(inplace=True),
        "hardswish": lambda: nn.Hardswish(inplace=True)}


def _as_spec(arch):
    return load_spec(arch) if isinstance(arch, str) else arch


def _acts(name):
    return [] if name == "none" else [_ACT[name]()]


def _conv_bn(cin, cout, k, stride, pad, groups=1):
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class Residual(nn.Module):
    """Basic block: act(body(x) + shortcut(x)); the shortcut projects (1x1 conv + BN) when the shape changes."""

    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.body = nn.Sequential(*(_conv_bn(cin, cout, 3, stride, 1) + _acts(act) + _conv_bn(cout, cout, 3, 1, 1)))
        self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride, 0)) if (cin != cout or stride != 1) \
            else nn.Identity()
        self.act = nn.Sequential(*_acts(act))

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


def _unit(b, cin):
    """The modules of one spatial block (a conv block is Sequential(conv, BN, act[, pool]): the layout of
    the shipped alexnet-cifar checkpoints, whose tensor names must keep loading)."""
    kind = b["type"]
    if kind == "conv":
        return _conv_bn(cin, b["channels"], b["kernel"], b["stride"], b["padding"]) + _acts(b["act"])
    if kind == "dwsep":
        k, s = b["kernel"], b["stride"]
        return (_conv_bn(cin, cin, k, s, k // 2, groups=cin) + _acts(b["act"]) +
                _conv_bn(cin, b["channels"], 1, 1, 0) + _acts(b["act"]))
    if kind == "residual":
        return [Residual(cin, b["channels"], b["stride"], b["act"])]
    if kind == "maxpool":
        return [nn.MaxPool2d(b["kernel"], b["stride"])]
    if kind == "avgpool":
        return [nn.AvgPool2d(b["kernel"], b["stride"])]
    if kind == "gap":
        return [nn.AdaptiveAvgPool2d(1)]
    return _acts(b["fn"])  # a standalone activation


class GroupPath(nn.Module):
    """One group: a complete path from the input image to a [N, num_classes] logit contribution."""

    def __init__(self, arch, in_channels=3, num_classes=10, input_size=32, width=1.0):
        super().__init__()
        units, fcs, c = [], [], in_channels
        for _, b, cin, _, cout, hw, _, _ in walk(_as_spec(arch), input_size, in_channels, width):
            if b["type"] == "fc":
                fcs += [nn.Linear(cin, cout)] + _acts(b["act"])
            elif b["type"] == "act" and fcs:
                fcs += _acts(b["fn"])
            elif units and b["type"] in ("maxpool", "avgpool", "act") and isinstance(units[-1], list):
                units[-1] += _unit(b, cin)  # a pool or activation right after a conv joins its unit
            else:
                units.append(_unit(b, cin) if b["type"] in ("conv", "dwsep") else nn.Sequential(*_unit(b, cin)))
            c = cout * hw * hw if b["type"] != "fc" else cout
        self.features = nn.Sequential(*[nn.Sequential(*u) if isinstance(u, list) else u for u in units])
        self.classifier = nn.Sequential(nn.Flatten(), *fcs)
        self.head = nn.Linear(c, num_classes)

    def embed(self, x):
        """The features the group's head reads (what a level head reads, concatenated over groups 1..k)."""
        return self.classifier(self.features(x))

    def forward(self, x):
        return self.head(self.embed(x))


def mean_weights(groups):
    """The default combination: level k averages its k contributions."""
    return [[1.0 / k] * k for k in range(1, groups + 1)]


def check_level_weights(weights, groups, where="level_weights"):
    ok = (isinstance(weights, list) and len(weights) == groups and
          all(isinstance(r, list) and len(r) == k and all(isinstance(v, (int, float)) and v == v for v in r)
              for k, r in enumerate(weights, 1)))
    if not ok:
        raise UserError("%s must be %d lists, list k holding the k finite weights of level k; got %.60r"
                        % (where, groups, weights))
    return [[float(v) for v in r] for r in weights]


class _Levels(object):
    """Level combination shared by both nets: level k = sum_g w[k-1][g-1] * contribution_g."""

    def level_scale(self, level):
        return 1.0 / level

    def is_uniform(self):
        return self.level_weights == mean_weights(self.num_groups)

    def combine(self, contribs, level):
        """Level `level` from its contributions (the sum times 1/k when uniform, as the shipped engines do)."""
        if self.is_uniform():
            return sum(contribs[:level]) * self.level_scale(level)
        w = self.level_weights[level - 1]
        return sum(c * w[g] for g, c in enumerate(contribs[:level]))


class GroupedNet(_Levels, nn.Module):
    """G group paths; forward(x, level) combines paths 1..level with level_weights, or, for a level whose
    head is fitted (level_heads, compile/level_heads.py), with that level's linear head over the
    concatenated features of groups 1..level."""

    def __init__(self, arch="alexnet-cifar", groups=4, in_channels=3, num_classes=10, input_size=32,
                 widths=None, level_weights=None, level_heads=False):
        super().__init__()
        spec = _as_spec(arch)
        self.arch, self.spec, self.num_groups = spec["name"], spec, groups
        self.widths = [float(w) for w in (widths or [1.0] * groups)]
        self.level_weights = check_level_weights(level_weights or mean_weights(groups), groups)
        self.groups = nn.ModuleList(GroupPath(spec, in_channels, num_classes, input_size, w) for w in self.widths)
        self.level_heads = None
        self.heads_ready = [False] * groups  # level k uses its head once step k has fitted it
        if level_heads:
            dims = [p.head.in_features for p in self.groups]
            self.level_heads = nn.ModuleList(nn.Linear(sum(dims[:k]), num_classes) for k in range(1, groups + 1))

    def has_heads(self):
        return self.level_heads is not None and all(self.heads_ready)

    def group_logits(self, x, g):
        """Contribution of group g (1-based), before the level's weights."""
        return self.groups[g - 1](x)

    def _level(self, feats, k):
        if self.level_heads is not None and self.heads_ready[k - 1]:
            return self.level_heads[k - 1](torch.cat(feats[:k], 1))
        return self.combine([p.head(f) for p, f in zip(self.groups, feats[:k])], k)

    def forward(self, x, level=None):
        level = self.num_groups if level is None else level
        return self._level([self.groups[g].embed(x) for g in range(level)], level)

    def all_levels(self, x, upto=None, known=()):
        """Logits of levels 1..upto from one pass: each group runs once. `known`: the features of groups
        1..len(known) for this x, already computed (frozen groups: the trainer reuses them every epoch)."""
        upto = self.num_groups if upto is None else upto
        feats = list(known[:upto]) + [self.groups[g].embed(x) for g in range(len(known), upto)]
        return [self._level(feats, k) for k in range(1, upto + 1)]

    def features(self, x, upto):
        """The features of groups 1..upto (what all_levels takes as `known`)."""
        return [self.groups[g].embed(x) for g in range(upto)]

    def group_parameters(self, g):
        return self.groups[g - 1].parameters()

    def group_modules(self, g):
        return [self.groups[g - 1]]


def _dense_layers(spec):
    """The spec as the baseline's (kind, out, kernel, pool-after) layers; only plain stride-1 'same' convs,
    2x2 max pools after a conv, and fc blocks with ReLU are expressible."""
    layers = []
    for i, b in enumerate(spec["blocks"], 1):
        if b["type"] == "conv" and b["stride"] == 1 and b["padding"] == b["kernel"] // 2 and b["act"] == "relu":
            layers.append(["conv", b["channels"], b["kernel"], False])
        elif b["type"] == "maxpool" and (b["kernel"], b["stride"]) == (2, 2) and layers and layers[-1][0] == "conv":
            layers[-1][3] = True
        elif b["type"] == "fc" and b["act"] == "relu":
            layers.append(["fc", b["units"], 0, False])
        else:
            raise UserError("the dense baseline supports only plain specs (stride-1 ReLU convs, 2x2 max pools, "
                            "ReLU fc); %s block %d (%s) is not one: use --scheme grouped or static"
                            % (spec["name"], i, b["type"]))
    return layers


def _dense_conv(cin, out, kernel, pool):
    mods = _conv_bn(cin, out, kernel, 1, kernel // 2) + _acts("relu")
    return nn.Sequential(*(mods + ([nn.MaxPool2d(2)] if pool else [])))


class _DenseLayer(nn.Module):
    """One layer of the dense-incremental net: out group j reads input groups 1..j."""

    def __init__(self, groups, cin_per_group, layer, first, conv):
        super().__init__()
        self.conv, self.first = conv, first
        kind, out, kernel, pool = layer
        blocks = []
        for j in range(1, groups + 1):
            cin = cin_per_group if first else cin_per_group * j
            blocks.append(_dense_conv(cin, out, kernel, pool) if conv else
                          nn.Sequential(nn.Linear(cin, out), nn.ReLU(inplace=True)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, xs, level):
        """xs: per-group inputs, or the image itself for the first layer; returns `level` outputs."""
        if self.first:
            return [block(xs) for block in self.blocks[:level]]
        return [block(torch.cat(xs[:j + 1], 1) if j else xs[0]) for j, block in enumerate(self.blocks[:level])]


class DenseIncrementalNet(_Levels, nn.Module):
    """Tann et al. 2016 style baseline with the same per-group widths as GroupedNet."""

    def __init__(self, arch="alexnet-cifar", groups=4, in_channels=3, num_classes=10, input_size=32,
                 widths=None, level_weights=None):
        super().__init__()
        spec = _as_spec(arch)
        if widths and any(w != 1 for w in widths):
            raise UserError("the dense baseline has equal groups only; drop --group-widths or use --scheme grouped")
        self.arch, self.spec, self.num_groups = spec["name"], spec, groups
        self.widths = [1.0] * groups
        self.level_weights = check_level_weights(level_weights or mean_weights(groups), groups)
        mods, c, hw, first, seen_fc = [], in_channels, input_size, True, False
        for layer in _dense_layers(spec):
            if layer[0] == "conv":
                mods.append(_DenseLayer(groups, c, layer, first, conv=True))
                c = layer[1]
                hw = hw // 2 if layer[3] else hw
            else:
                flat = c * hw * hw if not seen_fc else c
                mods.append(_DenseLayer(groups, flat, layer, first, conv=False))
                c, seen_fc = layer[1], True
            first = False
        self.layers = nn.ModuleList(mods)
        self.heads = nn.ModuleList(nn.Linear(c, num_classes) for _ in range(groups))

    def group_contributions(self, x, level):
        xs = x
        for i, layer in enumerate(self.layers):
            if not layer.conv and (i == 0 or self.layers[i - 1].conv):
                xs = [t.flatten(1) for t in xs]
            xs = layer(xs, level)
        return [self.heads[j](xs[j]) for j in range(level)]

    def forward(self, x, level=None):
        level = self.num_groups if level is None else level
        return self.combine(self.group_contributions(x, level), level)

    def all_levels(self, x, upto=None):
        upto = self.num_groups if upto is None else upto
        contribs = self.group_contributions(x, upto)
        return [self.combine(contribs, k) for k in range(1, upto + 1)]

    def group_parameters(self, g):
        """Parameters that belong to group g: its block in every layer and its head."""
        for layer in self.layers:
            yield from layer.blocks[g - 1].parameters()
        yield from self.heads[g - 1].parameters()

    def group_modules(self, g):
        return [layer.blocks[g - 1] for layer in self.layers] + [self.heads[g - 1]]


def build_model(scheme, arch, groups, num_classes=10, input_size=32, in_channels=3, widths=None,
                level_weights=None, level_heads=False):
    if level_heads and scheme != "grouped":
        raise UserError("--level-heads needs --scheme grouped (the heads read each group path's features)")
    if scheme == "dense":
        return DenseIncrementalNet(arch, groups, in_channels, num_classes, input_size, widths, level_weights)
    return GroupedNet(arch, groups, in_channels, num_classes, input_size, widths, level_weights, level_heads)


def _group_module_list(model, g):
    return list(model.groups[g - 1].modules()) if isinstance(model, GroupedNet) else \
        [m for gm in model.group_modules(g) for m in gm.modules()]


def count_params(model, level):
    """Deployed parameters of one level (BatchNorm folded: weight + one bias per output channel)."""
    total = 0
    for g in range(1, level + 1):
        for mod in _group_module_list(model, g):
            if isinstance(mod, nn.Conv2d):
                total += mod.weight.numel() + mod.out_channels
            elif isinstance(mod, nn.Linear):
                total += mod.weight.numel() + mod.out_features
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
        model(torch.zeros(1, in_channels, input_size, input_size, device=next(model.parameters()).device), level)
    model.train(was_training)
    for h in handles:
        h.remove()
    return macs[0]
