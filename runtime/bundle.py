"""Reading and verifying a bundle directory (docs/bundle.md): manifest, checksums, golden vectors."""
import hashlib
import json
import os
import tempfile

import numpy as np

from runtime.errors import RuntimeUserError

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
    path = os.path.join(bundle_dir, "manifest.json")
    if not os.path.isdir(bundle_dir):
        raise RuntimeUserError("bundle directory %s does not exist; build one with: python build.py --target NAME"
                               % bundle_dir)
    if not os.path.isfile(path):
        raise RuntimeUserError("%s has no manifest.json; it is not a bundle (build one with: "
                               "python build.py --target NAME)" % bundle_dir)
    try:
        with open(path) as f:
            man = json.load(f)
    except ValueError as exc:
        raise RuntimeUserError("%s is not valid JSON (%s); rebuild or re-deploy the bundle" % (path, exc))
    if man.get("schema") != SCHEMA:
        raise RuntimeUserError("%s is not a dynn bundle manifest (schema %r)" % (path, man.get("schema")))
    if int(man.get("schema_version", 0)) > SCHEMA_VERSION:
        raise RuntimeUserError("%s has schema version %s but this runtime reads up to %d; update the runtime "
                               "together with the bundle" % (path, man.get("schema_version"), SCHEMA_VERSION))
    return man


def verify_files(bundle_dir, manifest):
    """Check size and sha256 of every file the manifest lists; raise on the first mismatch."""
    for rel, info in sorted(manifest.get("files", {}).items()):
        p = os.path.join(bundle_dir, rel)
        if not os.path.isfile(p):
            raise RuntimeUserError("%s is missing from the bundle %s; re-deploy it" % (rel, bundle_dir))
        if os.path.getsize(p) != info["size"] or sha256_file(p) != info["sha256"]:
            raise RuntimeUserError("%s in %s fails its checksum (expected sha256 %s..., size %d): the file is "
                                   "corrupt or was changed; re-deploy the bundle"
                                   % (rel, bundle_dir, info["sha256"][:12], info["size"]))


def load_golden(bundle_dir, manifest):
    g = manifest.get("golden")
    if not g:
        raise RuntimeUserError("the manifest of %s names no golden vectors" % bundle_dir)
    with np.load(os.path.join(bundle_dir, g["file"]), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
