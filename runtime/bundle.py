"""Reading and verifying a bundle directory (docs/bundle.md): manifest, checksums, golden vectors."""
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from runtime.errors import RuntimeUserError
from runtime.manifest_schema import check_manifest

SCHEMA = "dynn-bundle"
SCHEMA_VERSION = 1


def sha256_file(path):
    """Hex sha256 of a file, read in 1 MiB chunks: the one checksum every record of the project uses."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path, data, mode=0o644):
    """Write `data` to `path` so that readers see the old file or the new one, never half of either.

    The temporary file has a unique name in the same directory (two writers never share it) and is
    removed if anything fails before the rename."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path, doc, mode=0o644):
    atomic_write_bytes(path, (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8"), mode)


def read_manifest(bundle_dir):
    """The bundle's manifest, checked once here against runtime/manifest_schema.py (one-line errors)."""
    path = os.path.join(bundle_dir, "manifest.json")
    if not os.path.isdir(bundle_dir):
        raise RuntimeUserError("bundle directory %s does not exist; build one with: python build.py --target NAME"
                               % bundle_dir)
    if not os.path.isfile(path):
        raise RuntimeUserError("%s has no manifest.json; it is not a bundle (build one with: "
                               "python build.py --target NAME)" % bundle_dir)
    try:
        with open(path, "rb") as f:
            man = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise RuntimeUserError("%s cannot be read as JSON (%s); rebuild or re-deploy the bundle"
                               % (path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    if not isinstance(man, dict) or man.get("schema") != SCHEMA:
        raise RuntimeUserError("%s is not a dynn bundle manifest (schema %r); point at a directory made by "
                               "python build.py --target NAME" % (path, man.get("schema") if isinstance(man, dict)
                                                                   else type(man).__name__))
    version = man.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RuntimeUserError("%s: schema_version must be a positive integer, got %r; rebuild the bundle"
                               % (path, version))
    if version > SCHEMA_VERSION:
        raise RuntimeUserError("%s has schema version %s but this runtime reads up to %d; update the runtime "
                               "together with the bundle" % (path, version, SCHEMA_VERSION))
    return check_manifest(man, path, bundle_dir)


def verify_files(bundle_dir, manifest):
    """Check size and sha256 of every file the manifest lists; raise on the first mismatch.

    The manifest came through read_manifest, so every path is inside the bundle and every engine and
    golden file is among those checked here."""
    for rel, info in sorted(manifest["files"].items()):
        p = os.path.join(bundle_dir, rel)
        if not os.path.isfile(p):
            raise RuntimeUserError("%s is missing from the bundle %s; re-deploy it" % (rel, bundle_dir))
        if os.path.getsize(p) != info["size"] or sha256_file(p) != info["sha256"]:
            raise RuntimeUserError("%s in %s fails its checksum (expected sha256 %s..., size %d): the file is "
                                   "corrupt or was changed; re-deploy the bundle"
                                   % (rel, bundle_dir, info["sha256"][:12], info["size"]))


def load_golden(bundle_dir, manifest):
    """The golden vectors, with their keys and shapes checked against the manifest."""
    g = manifest.get("golden")
    if not g:
        raise RuntimeUserError("the manifest of %s names no golden vectors; rebuild the bundle" % bundle_dir)
    path = os.path.join(bundle_dir, g["file"])
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise RuntimeUserError("%s cannot be read as golden vectors (%s); re-deploy the bundle"
                               % (path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    n, shape = g["count"], manifest["input"]["shape"][1:]
    c, h, w = shape
    want = {"images": ((n, h, w, c), np.uint8), "input": ((n, c, h, w), np.float32)}
    for lv in manifest["levels"]:
        want["level%d" % lv["level"]] = ((n, manifest["output"]["shape"][1]), np.float32)
    for key, (shp, dtype) in sorted(want.items()):
        a = out.get(key)
        if a is None or a.shape != shp or a.dtype != dtype:
            raise RuntimeUserError("%s: %s must be a %s array of shape %s, got %s; rebuild the bundle"
                                   % (path, key, np.dtype(dtype).name, list(shp),
                                      "nothing" if a is None else "%s %s" % (a.dtype, list(a.shape))))
    return out


def level_weights(manifest):
    """Per level, None where the level is the plain mean of its groups (sum, then times level_scale[k-1]:
    old bundles' exact arithmetic) or the k float32 weights of sum_g w[k][g] * contribution_g (issue 11)."""
    weights = manifest["model"].get("level_weights")
    out = []
    for k, scale in enumerate(manifest["model"]["level_scale"], 1):
        w = weights[k - 1] if weights is not None else None
        uniform = w is None or all(abs(x - 1.0 / k) <= 1e-12 for x in w) and abs(scale - 1.0 / k) <= 1e-12
        out.append(None if uniform else np.asarray(w, np.float32))
    return out
