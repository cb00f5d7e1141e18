"""python -m runtime doctor [BUNDLE]: a read-only check of this board and of what a bundle needs.

Prints which board was detected and why, every sysfs path its board file declares (exists / readable /
writable), the governors, the power mode and its caps, one reading of every power rail, the engine
bindings with their versions, and what BUNDLE needs that is missing here. It writes nothing: no clock,
no state file, no lock. Exit status 1 when the bundle cannot run here (each reason under "problems").
"""
import os
import re
import sys

from runtime.cli import module_versions

BINDINGS = ("tensorrt", "pycuda", "tflite_runtime", "ai_edge_litert", "onnxruntime", "numpy")
# Which bindings can run each engine of a bundle (any one of them will do).
ENGINE_BINDINGS = {"tflite": ("ai_edge_litert", "tflite_runtime"), "onnx": ("onnxruntime",),
                   "tensorrt": ("tensorrt",)}


def add_arguments(parser):
    parser.add_argument("bundle", nargs="?", help="bundle directory to check against this board (optional)")
    parser.add_argument("--board", default=None, help="board name or board JSON file (default: detected)")
    parser.add_argument("--sysfs-root", default="/", help="root of the sysfs tree (default /; a fake tree in tests)")


def _flags(path):
    if not os.path.exists(path):
        return "missing"
    return " ".join(w if os.access(path, m) else "not-" + w
                    for w, m in (("readable", os.R_OK), ("writable", os.W_OK)))


def _files(out, sysfs, title, directory, files, written, reason):
    if not directory:
        out.append("  %-10s %s" % (title, reason))
        return
    out.append("  %-10s %s" % (title, sysfs.rel(directory)))
    for role, name in sorted(files.items()):
        out.append("    %-32s %-28s%s" % (name, _flags(os.path.join(directory, name)),
                                          "  (the runtime writes it)" if role in written else ""))


def _board_section(out, p, why):
    from runtime.platform.dvfs import CPUFREQ_FILES, DEVFREQ_FILES
    b, sysfs = p.board, p.sysfs
    out.append("board      %s (%s)" % (b.name, why))
    out.append("dvfs       %s" % ("available" if p.dvfs_available else p.dvfs_reason))
    out.append("sysfs paths declared by the board file (under %s)" % sysfs.root)
    for rel in b.detect.get("compatible_files", []) + b.detect.get("model_files", []):
        out.append("  %-10s %-45s %s" % ("detect", rel, _flags(sysfs.path(rel))))
    if b.power_mode:
        for key in ("status_file", "conf_file"):
            out.append("  %-10s %-45s %s" % ("power mode", b.power_mode[key], _flags(sysfs.path(b.power_mode[key]))))
    for name, c in p.clusters.items():
        _files(out, sysfs, name, c.policy_dir, dict(CPUFREQ_FILES, **b.cpufreq.get("files", {})),
               b.cpufreq.get("writable", []), c.reason)
    if p.gpu:
        _files(out, sysfs, "gpu", p.gpu.devfreq_dir, dict(DEVFREQ_FILES, **b.gpu.get("files", {})),
               b.gpu.get("writable", []), p.gpu.reason)
    out.append("  %-10s %s" % ("power", p.power.kind or p.power.reason))
    for r in p.power.rails:
        out.append("    %-43s %s" % (sysfs.rel(r.path), _flags(r.path)))
    for e in p.power.enable_paths:
        out.append("    %-43s %s  (enabled for measuring)" % (sysfs.rel(e), _flags(e)))
    out.append("governors")
    for name, c in p.clusters.items():
        current = sysfs.try_read(os.path.join(c.policy_dir, "scaling_governor")) if c.policy_dir else None
        out.append("  %-10s %s (available: %s; the runtime sets clocks via %s)"
                   % (name, current, " ".join(c.governors) or "none", c.method or "nothing"))
    if p.gpu and p.gpu.devfreq_dir:
        out.append("  %-10s %s" % ("gpu", p.gpu.governor))


def _power_section(out, p):
    mode = p.power_mode()
    if mode["tool"]:
        out.append("power mode %s %s (%s, from %s)" % (mode["tool"], mode["id"], mode["name"] or "unnamed",
                                                      mode["source"]) if mode["id"] is not None
                   else "power mode %s: %s" % (mode["tool"], mode["reason"]))
    else:
        out.append("power mode %s" % mode["reason"])
    out.append("  online CPUs %s" % " ".join(str(n) for n in mode["online_cpus"]))
    for name, caps in mode["caps"].items():
        unit = "kHz" if name != "gpu" else "Hz"
        lo, hi = list(caps.values())
        out.append("  caps %-6s %s..%s %s (the runtime never sets clocks outside them)" % (name, lo, hi, unit))
    meter = p.power
    if not meter:
        out.append("power      %s" % meter.reason)
        return
    out.append("power      %s sensors (files in %s, reported in W), total = %s" % (meter.kind, meter.unit, meter.total))
    try:
        for rail, watts in meter.read().items():
            out.append("  %-12s %8.3f W" % (rail, watts))
    except Exception as exc:  # noqa: BLE001 - a sensor that cannot be read is reported, not fatal
        out.append("  cannot read the sensors: %s" % exc)
    disabled = [e for e in meter.enable_paths if p.sysfs.try_read(e) == "0"]
    if disabled:
        out.append("  note: %d sensor(s) are disabled (enable = 0): these values are stale until a measurement "
                   "enables them" % len(disabled))


def _bindings_section(out):
    import importlib.util
    versions = module_versions(BINDINGS)
    out.append("bindings   Python %s" % versions["python"])
    for name in BINDINGS:
        found = versions[name] or ("installed, version unknown" if importlib.util.find_spec(name) else None)
        out.append("  %-15s %s" % (name, found or "not installed"))
    return versions


def _release(version):
    """'2.14.0' -> (2, 14, 0): enough to compare release numbers on a board without `packaging`."""
    return tuple(int(n) for n in re.findall(r"\d+", version or "")[:3])


def _bundle_problems(bundle, board, versions):
    """Lines saying what the bundle needs that this board lacks (empty: it can run here)."""
    from runtime.bundle import read_manifest
    man = read_manifest(bundle)
    target, engines = man["target"], man["engines"]
    problems, notes = [], []
    if target.get("board") and not board.generic and target["board"] != board.name:
        problems.append("bundle is for board %s, this is %s: build and deploy one for this board"
                        % (target["board"], board.name))
    want = target.get("runtime_python")
    if want and _release(sys.version.split()[0]) < _release(want):
        problems.append("bundle's runtime needs Python %s, this is %s" % (want, sys.version.split()[0]))
    usable = []
    for engine in [target["engine"]] + [e for e in sorted(engines) if e != target["engine"]]:
        have = [b for b in ENGINE_BINDINGS.get(engine, ()) if versions.get(b)]
        missing = _engine_missing(bundle, engine, engines.get(engine, {}), have, versions)
        notes.append("  engine %-9s %s" % (engine, missing or "ok (%s)" % ", ".join(have)))
        if missing is None:
            usable.append(engine)
    notes.append("  batch sizes %s" % ", ".join(str(b) for b in target.get("batch_sizes", [])))
    if not usable:
        problems.append("none of the bundle's engines (%s) can run here: install a binding listed above"
                        % ", ".join(sorted(engines)))
    elif target["engine"] not in usable:
        notes.append("  note: the bundle's own engine %s cannot run here; runtime.load falls back to %s"
                     % (target["engine"], usable[0]))
    return man, notes, problems


def _engine_missing(bundle, engine, spec, have, versions):
    """Why `engine` cannot run here, or None."""
    if not have:
        return "missing: needs %s" % " or ".join(ENGINE_BINDINGS.get(engine, (engine,)))
    if engine == "tensorrt":
        if not versions.get("pycuda"):
            return "missing: needs pycuda (pip install pycuda==2022.1, built on the board with nvcc on PATH)"
        if not os.path.isfile(os.path.join(bundle, spec.get("record", "engine.json"))):  # per-group has no model.plan
            return "not built here yet: run python -m runtime trt-build %s" % bundle
    if engine == "tflite" and have == ["tflite_runtime"]:
        need = spec.get("min_runtime", {}).get("tflite")
        if need and _release(versions["tflite_runtime"]) < _release(need):
            return "tflite-runtime %s is older than the %s this bundle needs" % (versions["tflite_runtime"], need)
    if engine == "onnx":
        import onnxruntime as ort
        try:  # the authoritative check of the opset: let this onnxruntime read the file (nothing is written)
            ort.InferenceSession(os.path.join(bundle, spec["file"]), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any load failure is what the user needs to see
            return "onnxruntime %s cannot load %s (opset %s): %s" % (
                versions["onnxruntime"], spec["file"], spec.get("opset"), str(exc).strip().splitlines()[0][:160])
    return None


def main(args):
    from runtime.platform import Platform
    from runtime.platform.board import detect, list_boards, load_board
    from runtime.platform.sysfs import Sysfs
    sysfs = Sysfs(args.sysfs_root)
    if args.board:
        board, why = load_board(args.board), "given with --board"
    else:
        found = detect(sysfs)
        board, why = found if found else (None, "no shipped board (%s) matches the device tree under %s"
                                          % (", ".join(list_boards()), sysfs.root))
    out = []
    with Platform.open(board=board, sysfs_root=args.sysfs_root, signals=False) as p:
        _board_section(out, p, why)
        _power_section(out, p)
    versions = _bindings_section(out)
    problems = []
    if args.bundle:
        man, notes, problems = _bundle_problems(args.bundle, p.board, versions)
        out.append("bundle     %s (target %s, engine %s)" % (args.bundle, man["target"]["name"], man["target"]["engine"]))
        out.extend(notes)
    out.append("problems   %s" % ("none" if not problems else len(problems)))
    out.extend("  " + line for line in problems)
    print("\n".join(line.rstrip() for line in out))
    return 1 if problems else 0
