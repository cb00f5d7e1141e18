"""What a bundle's target needs on the board, read from the bundle itself, checked and pip-installed there.

The requirements are data: `board_requirements` in compile/targets/<target>.json, which the compiler copies
into manifest["target"]. Each entry:

  import              module whose import proves the requirement met; the version checked is its top-level
                      package's __version__ (or VERSION_TEXT, pycuda's name for it)
  pip                 optional PEP 508 requirement that installs it; its specifier is the accepted range
  version             optional range when there is no pip line (a package from apt or JetPack)
  instead             optional list of {import, version} that meet the requirement as well
  pip_path_prepend    optional directories put first on PATH for pip (pycuda compiles with nvcc)
  fix                 what to do when it is missing and pip cannot install it
  source              where the fact comes from (for maintainers; not read here)
"""
import json
import re
import shlex

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from runtime.schema import field, require_dict

from .errors import DeployError, EXIT_REQUIREMENTS, EXIT_USAGE
from .ssh import quote_python

MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
DIRECTORY = re.compile(r"^/[A-Za-z0-9._/+-]*$")

# Runs on the board with the remote Python (3.6+); the module list is appended as one JSON line. Prints
# what imports, as one JSON line; an OSError from a shared library that does not load counts as missing.
PROBE_PY = r"""
import json, platform, sys
info = {"python": list(sys.version_info[:3]), "executable": sys.executable, "machine": platform.machine(),
        "venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix), "modules": {}}
for name in MODULES:
    try:
        __import__(name)
        top = sys.modules[name.split(".")[0]]
        info["modules"][name] = {"version": str(getattr(top, "__version__", getattr(top, "VERSION_TEXT", "")))}
    except Exception as e:
        info["modules"][name] = {"error": ("%s: %s" % (type(e).__name__, e)).splitlines()[0][:200]}
print("DYNN-PROBE " + json.dumps(info))
"""


def probe_script(modules):
    return "MODULES = %s\n%s" % (json.dumps(sorted(modules)), PROBE_PY.strip())


def read_requirements(manifest, manifest_path):
    """The target's board requirements from a bundle's manifest, checked; refuses bundles built before them."""
    target = manifest["target"]
    fix = "rebuild the bundle (python build.py --target %s)" % target.get("name", "NAME")
    if "board_requirements" not in target:
        raise DeployError("%s was built before targets declared their board requirements "
                          "(no target.board_requirements): %s" % (manifest_path, fix), EXIT_USAGE)
    entries = field(target, "board_requirements", list, manifest_path, fix, prefix="target.",
                    expect="a list of requirement objects", error=DeployError)
    out = []
    for i, raw in enumerate(entries):
        pre = "target.board_requirements[%d]." % i
        req = dict(require_dict(raw, manifest_path, fix, path=pre[:-1], error=DeployError))
        req["import"] = _module(req, pre, manifest_path, fix)
        req["spec"] = _spec(req, pre, manifest_path, fix)
        req["instead"] = [{"import": _module(alt, pre + "instead.", manifest_path, fix),
                           "spec": _spec(alt, pre + "instead.", manifest_path, fix)}
                          for alt in field(req, "instead", [dict], manifest_path, fix, prefix=pre, default=[],
                                           error=DeployError)]
        req["pip_path_prepend"] = field(req, "pip_path_prepend", [str], manifest_path, fix, prefix=pre, default=[],
                                        error=DeployError, check=lambda v: all(DIRECTORY.match(d) for d in v),
                                        expect="a list of absolute directories")
        req["fix"] = field(req, "fix", str, manifest_path, fix, prefix=pre, default="", error=DeployError)
        out.append(req)
    return out


def _module(doc, pre, where, fix):
    return field(doc, "import", str, where, fix, prefix=pre, error=DeployError, check=MODULE.match,
                 expect="a module name such as tflite_runtime.interpreter")


def _spec(doc, pre, where, fix):
    """The accepted version range: `version`, else the specifier of the `pip` requirement."""
    try:
        if "pip" in doc:
            return Requirement(field(doc, "pip", str, where, fix, prefix=pre, error=DeployError)).specifier
        return SpecifierSet(field(doc, "version", str, where, fix, prefix=pre, default="", error=DeployError))
    except (InvalidRequirement, InvalidSpecifier) as exc:  # packaging's message spans lines: keep the first
        raise DeployError("%s: %s%s is not a valid %s (%s): %s" % (
            where, pre, "pip" if "pip" in doc else "version", "PEP 508 requirement" if "pip" in doc else
            "version range", str(exc).splitlines()[0], fix))


def modules_to_probe(reqs):
    return {r["import"] for r in reqs} | {a["import"] for r in reqs for a in r["instead"]}


def _met(found, module, spec):
    """None when `module` imports in a version inside `spec`, else why not."""
    mod = found.get(module, {})
    if "version" not in mod:
        return mod.get("error", "not probed")
    if not str(spec):
        return None
    try:
        if spec.contains(Version(mod["version"]), prereleases=True):
            return None
    except InvalidVersion:
        pass
    return "found %s %s, outside %s" % (module, mod["version"] or "(no version)", spec)


def missing(reqs, found):
    """[(requirement, why)] for every requirement that neither it nor one of its `instead` meets."""
    out = []
    for r in reqs:
        why = _met(found, r["import"], r["spec"])
        if why is not None and all(_met(found, a["import"], a["spec"]) is not None for a in r["instead"]):
            out.append((r, why))
    return out


def check_python(target, info, python, where):
    need = str(target.get("runtime_python", "3.6"))
    have = ".".join(str(n) for n in info["python"])
    if Version(have) < Version(need):
        raise DeployError("%s: target %s needs Python %s+, the board's `%s` is Python %s (%s): install a newer "
                          "interpreter and pass it with --python" % (where, target["name"], need, python, have,
                                                                     info["executable"]), EXIT_REQUIREMENTS)


def pip_command(python, info, req):
    path = ":".join(shlex.quote(d) for d in req["pip_path_prepend"])
    return "%s%s -m pip install %s%s" % ("PATH=%s:\"$PATH\" " % path if path else "", quote_python(python),
                                         "" if info["venv"] else "--user ", shlex.quote(req["pip"]))


def describe(req, why):
    return "%s (%s)" % (req.get("pip") or req["import"], why)


def refuse(where, target, gaps, python, info, installing):
    """The error for requirements this deploy will not (or could not) install."""
    names = ", ".join(describe(r, why) for r, why in gaps)
    cannot = [r for r, _ in gaps if "pip" not in r]
    if cannot:
        todo = "; ".join(r["fix"] or "install %s for %s" % (r["import"], python) for r in cannot)
    else:
        todo = "run on the board `%s`%s%s" % (" && ".join(pip_command(python, info, r) for r, _ in gaps),
                                              "" if installing else " (or deploy without --no-install)",
                                              "".join("; %s" % r["fix"] for r, _ in gaps if r["fix"]))
    return DeployError("%s: target %s needs %s on the board: %s" % (where, target["name"], names, todo),
                       EXIT_REQUIREMENTS)
