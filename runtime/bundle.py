"""Reading and verifying a bundle directory (docs/bundle.md): manifest, checksums, golden vectors."""
import hashlib
import json
import os

import numpy as np

from runtime.errors import RuntimeUserError

SCHEMA = "dynn-bundle"
SCHEMA_VERSION = 1


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
