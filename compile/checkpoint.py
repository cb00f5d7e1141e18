"""Checkpoints: `NAME.safetensors` (tensors only, never pickles) plus `NAME.json` (everything else).

The JSON sidecar rebuilds the model (architecture, groups, classes, input normalisation) and records
how it was made and how well each level does, so the compiler needs nothing but these two files.
It also holds the sha256 of the tensor file, which catches a truncated, corrupt or swapped pair.
"""
import json
import os

from compile.arch import spec_of, widths_of
from compile.errors import UserError
from compile.validate import CHECKPOINT_FORMAT, SCHEMES, check_sidecar, check_tensor_header  # noqa: F401 - SCHEMES re-exported
from runtime.bundle import atomic_write_bytes, sha256_file  # the project's one writer and checksum
from runtime.schema import load_json

FORMAT = CHECKPOINT_FORMAT
FORMAT_VERSION = 1


def sidecar_path(path):
    return os.path.splitext(path)[0] + ".json"


def resolve(path):
    """Accept the .safetensors file, the .json sidecar, or a directory holding model.safetensors."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    elif path.endswith(".json"):
        path = os.path.splitext(path)[0] + ".safetensors"
    return path


def umask_mode(base=0o666):
    """`base` less the process umask: what open()/mkdir() would have made (mkstemp/mkdtemp make 0600/0700)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def atomic_save_tensors(tensors, path, metadata=None):
    # serialised in memory (checkpoints are a few MB) so that the one atomic writer writes it
    from safetensors.torch import save
    data = save({k: v.detach().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data, umask_mode())  # artifacts are for everyone to read, as open() would make


def save_checkpoint(model, meta, path):
    """Write tensors then sidecar, both atomically; the sidecar names the tensors' sha256."""
    path = resolve(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_save_tensors(model.state_dict(), path, metadata={"format": FORMAT})
    meta = dict(meta, format=FORMAT, format_version=FORMAT_VERSION,
                tensors={"file": os.path.basename(path), "sha256": sha256_file(path)})
    atomic_write_bytes(sidecar_path(path), (json.dumps(meta, indent=2) + "\n").encode(), umask_mode())
    return path


def read_meta(path):
    path = resolve(path)
    side = sidecar_path(path)
    if not os.path.isfile(side):
        raise UserError("checkpoint sidecar %s is missing; a checkpoint is NAME.safetensors plus NAME.json "
                        "(train one with: python build.py train)" % side)
    meta = load_json(side, "restore the checkpoint's sidecar or train again (python build.py train)", UserError)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError("%s is not a grouped-model checkpoint (no \"format\": \"%s\")" % (side, FORMAT))
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError("%s has checkpoint format version %r; this build reads version %d"
                        % (side, meta.get("format_version"), FORMAT_VERSION))
    return check_sidecar(meta, side)


def load_checkpoint(path, verify=True):
    """Return (model in eval mode, meta). Every failure is a UserError naming the file."""
    path = resolve(path)
    if not os.path.isfile(path):
        raise UserError("checkpoint %s does not exist (train one with: python build.py train, or use "
                        "artifacts/default/model.safetensors)" % path)
    meta = read_meta(path)
    # torch is imported only now: a bad checkpoint path or sidecar is refused in a fraction of a second
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from compile.model import build_model
    if verify:
        digest = sha256_file(path)
        if digest != meta.get("tensors", {}).get("sha256"):
            raise UserError("%s does not match its sidecar %s (sha256 differs): the file is corrupt, "
                            "truncated or from another checkpoint" % (path, os.path.basename(sidecar_path(path))))
    def make():  # the spec, widths and level weights the sidecar records (compile/arch, docs/architectures.md)
        model = build_model(meta["scheme"], spec_of(meta), int(meta["groups"]), int(meta["num_classes"]),
                            int(meta["input"]["size"]), int(meta["input"]["channels"]), widths_of(meta),
                            meta.get("level_weights"), bool(meta.get("level_heads")))
        if meta.get("level_heads"):
            model.heads_ready = [True] * model.num_groups  # a checkpoint carries heads for every level or none
        return model
    check_tensor_header(path, meta, make)  # names and shapes before any tensor is read or model built
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError("%s is not a readable safetensors file (%s)" % (path, str(exc).splitlines()[0]))
    model = make()
    model.load_state_dict(tensors)
    model.eval()
    return model, meta
