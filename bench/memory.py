"""Memory: engine file sizes, and resident memory with every level ready, each set measured in a fresh process.

Compared (all run with the same batch sizes and thread count):
  engine      the shipped bundle through runtime.load: one file, per-group signatures, every level run once
  full        the full-width single-level model alone (the level-G reference file)
  per_level   one single-level model per level, all loaded together (what a switching app would hold without
              this project)
  dense       the dense-incremental baseline bundle: one file, one signature per level
The runtime must hold all levels within LIMIT x the memory of the full-width model alone.
"""
import json
import os
import subprocess
import sys

from bench.stats import ratio, summarize
from compile.errors import UserError

LIMIT = 1.15
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: `-m bench...` runs from it


def rss_in_fresh_process(spec, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run([sys.executable, "-m", "bench.memory_worker", json.dumps(spec)], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise UserError("memory worker failed for %s (exit %d): %s" % (spec["kind"], p.returncode,
                                                                        p.stderr.strip()[-600:]))
    return json.loads(lines[-1])


def _files_spec(entries, batches, threads, shape):
    return {"kind": "files", "threads": threads, "batches": batches, "input_shape": shape,
            "files": [{"path": p, "signatures": ["%s_b%d" % (prefix, b) for prefix in prefixes for b in batches]}
                      for p, prefixes in entries]}


def measure_memory(bundle_dir, tflite_file, input_shape, batches, single_files, dense, threads=1, repeats=1,
                   log=print):
    """single_files: {level: path}; dense: (path, levels) or None. Returns the memory section of bench.json."""
    G = max(single_files)
    shape = list(input_shape)
    specs = {"engine": {"kind": "engine", "bundle": bundle_dir, "threads": threads, "batches": batches,
                        "input_shape": shape},
             "full": _files_spec([(single_files[G], ["level%d" % G])], batches, threads, shape),
             "per_level": _files_spec([(single_files[k], ["level%d" % k]) for k in sorted(single_files)],
                                      batches, threads, shape)}
    files = {"engine": [tflite_file], "full": [single_files[G]],
             "per_level": [single_files[k] for k in sorted(single_files)]}
    if dense:
        path, levels = dense
        specs["dense"] = _files_spec([(path, ["level%d" % k for k in levels])], batches, threads, shape)
        files["dense"] = [path]
    deltas = {k: [] for k in specs}
    names = list(specs)
    method = None
    for rep in range(repeats):
        for kind in names[rep % len(names):] + names[:rep % len(names)]:
            r = rss_in_fresh_process(specs[kind])
            deltas[kind].append(r["delta"])
            method = r["method"]
    rss = {k: summarize(v) for k, v in deltas.items()}
    size = {k: sum(os.path.getsize(p) for p in v) for k, v in files.items()}
    med = {k: v["median"] for k, v in rss.items()}
    out = {"threads": threads, "batches": batches, "repeats": repeats, "method": method,
           "rss_bytes": rss, "file_bytes": size,
           "rss_ratio": {k: ratio(med["engine"], med[k]) for k in med if k != "engine"},
           "file_ratio": {k: ratio(size["engine"], size[k]) for k in size if k != "engine"},
           "limit": LIMIT}
    r = out["rss_ratio"]["full"]
    out["within_limit"] = None if r is None else bool(r <= LIMIT)
    log("  memory: engine %.1f MB, full-width alone %.1f MB, one per level %.1f MB%s (RSS growth, median of %d)"
        % (med["engine"] / 1e6, med["full"] / 1e6, med["per_level"] / 1e6,
           ", dense %.1f MB" % (med["dense"] / 1e6) if "dense" in med else "", repeats))
    return out
