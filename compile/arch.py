"""Architecture description of one group path and the cost of each width level.

A group path is a complete AlexNet-style network for small images: it reads the whole input image
and ends in a logit contribution. The grouped model is G such paths; level k averages the
contributions of paths 1..k. The numbers here are the contract the model, the checkpoint and the
compiler share, so they live in one place.
"""
from collections import namedtuple

# kind, out channels, kernel, pool-after (AlexNet-style: big kernels first, three 3x3 convs, 2 FCs)
Layer = namedtuple("Layer", "kind out kernel pool")

ARCHITECTURES = {
    # 7.7 M MACs per 32x32 path; one path alone reaches ~80% on CIFAR-10 in 10 epochs here
    # (../shared/docs/measured.md, "Training on this machine").
    "alexnet-cifar": [
        Layer("conv", 16, 5, True),
        Layer("conv", 32, 5, True),
        Layer("conv", 48, 3, False),
        Layer("conv", 48, 3, False),
        Layer("conv", 32, 3, True),
        Layer("fc", 128, 0, False),
    ],
}


def check_arch(name):
    if name not in ARCHITECTURES:
        from compile.errors import UserError
        raise UserError("unknown architecture %r; choose one of: %s" % (name, ", ".join(sorted(ARCHITECTURES))))
    return ARCHITECTURES[name]


def layer_table(name, input_size=32, in_channels=3, num_classes=10):
    """Rows (layer, in, out, kernel, output HxW, params, MACs) of ONE group path, per image."""
    rows = []
    c, hw = in_channels, input_size
    flat = None
    for i, layer in enumerate(check_arch(name)):
        if layer.kind == "conv":
            params = c * layer.out * layer.kernel ** 2 + layer.out  # as deployed: BN folded into a bias
            macs = c * layer.out * layer.kernel ** 2 * hw * hw
            rows.append(("conv%d" % (i + 1), c, layer.out, layer.kernel, hw, params, macs))
            c = layer.out
            if layer.pool:
                hw //= 2
        else:
            flat = c * hw * hw if flat is None else c
            params = flat * layer.out + layer.out
            rows.append(("fc%d" % (i + 1), flat, layer.out, 0, 1, params, flat * layer.out))
            c, flat = layer.out, layer.out
    rows.append(("head", c, num_classes, 0, 1, c * num_classes + num_classes, c * num_classes))
    return rows


def path_cost(name, input_size=32, in_channels=3, num_classes=10):
    rows = layer_table(name, input_size, in_channels, num_classes)
    return sum(r[5] for r in rows), sum(r[6] for r in rows)


def grouped_level_costs(name, groups, input_size=32, in_channels=3, num_classes=10):
    """[(level, params, macs)] for the grouped model: level k runs k independent paths."""
    p, m = path_cost(name, input_size, in_channels, num_classes)
    return [(k, k * p, k * m) for k in range(1, groups + 1)]
