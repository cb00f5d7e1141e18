"""What every engine binding implements. The Model (runtime/model.py) does the rest for all of them:
checksums, level and shape validation, batching to the sizes an engine carries, preprocessing."""


class Backend(object):
    """One engine file (or engine set) holding every level.

    Subclasses set `name` and implement `run_level`; they are built by `open_backend` with the
    bundle directory and its parsed manifest.
    """

    name = "base"
    #: batch sizes this engine runs natively; None means any batch size.
    batch_sizes = None
    #: True when run_level, set_threads and close may be called from several threads at once; when False
    #: runtime.model.Model serialises every call into the backend with one lock.
    thread_safe = False

    def __init__(self, bundle_dir, manifest, threads=None):
        self.bundle_dir, self.manifest, self.threads = bundle_dir, manifest, threads

    def run_level(self, x, level):
        """x: float32 C-contiguous [B, C, H, W] with B in self.batch_sizes (or any B when None).
        Returns float32 [B, num_classes]: the logits of `level` (already scaled)."""
        raise NotImplementedError

    def prepare(self, levels):
        """Optional: make `levels` ready to switch to without first-call costs (e.g. weight packing)."""

    def close(self):
        """Release engine resources; must be safe to call twice."""


def combine(parts, level, weights, scale):
    """Level `level`'s logits from its groups' logits: parts is [(group, logits)] in group order, weights
    the level's entry of runtime.bundle.level_weights (None: the plain mean) and scale its level_scale.
    The one copy of this arithmetic (TFLite run_level and runtime.workers use it); the mean is summed in
    group order, then scaled, as the golden vectors were made (bit-identical to the old bundles)."""
    if weights is None:
        out = parts[0][1]
        for _, p in parts[1:]:
            out = out + p
        if level > 1:
            out *= scale
        return out
    out = parts[0][1] * weights[parts[0][0] - 1]
    for g, p in parts[1:]:
        out += p * weights[g - 1]
    return out


class Combiner(object):
    """How a bundle adds level k up from its groups' outputs, built from the manifest (runtime.bundle reads
    the fields): every engine binding, the placement workers, the compiler's checks and the benchmark's
    references call this one object.

    Without level heads a group outputs its [B, classes] logits and level k weighs them (combine above).
    With level heads (manifest model.level_heads, docs/bundle.md) group g outputs [B, (G-g+1) * classes]:
    its contributions to levels g..G side by side; level k is the sum over g <= k of slice k-g. A part
    already [B, classes] wide is taken whole: the last group's only slice, or a level engine's level output."""

    def __init__(self, weights, scale, heads=False, classes=None):
        self.weights, self.scale = list(weights), [float(s) for s in scale]
        self.heads, self.classes = bool(heads), classes
        self.groups = len(self.scale)

    @classmethod
    def from_manifest(cls, manifest):
        from runtime.bundle import level_heads, level_weights
        model = manifest["model"]
        return cls(level_weights(manifest), model["level_scale"], level_heads(manifest), int(model["num_classes"]))

    def width(self, group):
        """Columns of group `group`'s output."""
        return (self.groups - group + 1) * self.classes if self.heads else self.classes

    def __call__(self, parts, level):
        """parts: [(group, output)] in group order, the groups of `level`."""
        if not self.heads:
            return combine(parts, level, self.weights[level - 1], self.scale[level - 1])
        c, out = self.classes, None
        for g, p in parts:
            s = p if p.shape[1] == c else p[:, (level - g) * c:(level - g + 1) * c]
            out = s.copy() if out is None else out + s
        return out


def run_batched(fn, x, batch):
    """Run fn (which takes exactly `batch` rows) over all of x, zero-padding the tail (engines with a fixed
    batch: the benchmark's references, the compiler's int8 accuracy)."""
    import numpy as np
    out = []
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        n = len(part)
        if n < batch:
            part = np.concatenate([part, np.zeros((batch - n,) + part.shape[1:], part.dtype)])
        out.append(fn(np.ascontiguousarray(part))[:n])
    return np.concatenate(out)
