#!/usr/bin/env python3
"""Deploy a bundle and the runtime to one board over ssh, build its engine there and verify it.

  python3 board_scripts/deploy.py BUNDLE --host HOST [--user USER] [--dir DIR] [--port N] [--identity KEY]
          [--python PYTHON] [--no-install | --skip-requirements] [--udev] [--trt-mode if|per-group]
          [--copy auto|rsync|tar] [--ssh-option OPTION ...]

Runs on the host (Python 3.8+, standard library, ssh; rsync if present). Steps, see docs/deploy.md:
  1. checks the bundle here (manifest, sha256 of every file) and connects (one ssh call: directory, Python,
     rsync, which packages import);
  2. the board's Python requirements, per target: tflite-runtime in the range of requirements-board.txt for
     the XU3 and the Nano CPU (pip install --user, unless a binding imports already); TensorRT (JetPack's
     python3-libnvinfer) and pycuda 2022.1 for nano-gpu;
  3. copies runtime/, board_scripts/ and the bundle into a fresh DIR/.deploy-XXXXXX on the board (rsync when
     both sides have it, else a tar stream over ssh);
  4. --udev: installs board_scripts/udev/99-dynn-dvfs.rules (sudo on the board);
  5. nano-gpu: builds the TensorRT engine there (board_scripts/trt_build.py);
  6. runs `python -m runtime verify` on the staged copy; only when it passes, renames it into place:
     DIR/runtime, DIR/board_scripts, DIR/bundles/<bundle name>. A failure leaves the previous deployment as
     it was and removes the staged copy.

Exit status: 0 deployed and verified; 2 bad arguments or a bad bundle on the host; 3 cannot connect (or the
connection dropped); 4 copying or renaming on the board failed; 5 the board lacks a requirement or pip
failed; 6 the TensorRT engine build failed; 7 installing the udev rule failed; 8 verify failed.
Each failure ends with one line on stderr: `deploy: USER@HOST:PORT: what failed; what to do`.
"""
import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COPIED = ("runtime", "board_scripts")          # code that goes with every bundle
EXCLUDE_DIRS = ("__pycache__",)
EXCLUDE_PREFIXES = (".trt-build-", ".deploy-")  # leftovers of interrupted builds and deploys
EXCLUDE_SUFFIXES = (".pyc",)

EXIT_OK, EXIT_USAGE, EXIT_CONNECT, EXIT_COPY, EXIT_REQUIREMENTS, EXIT_TRT, EXIT_UDEV, EXIT_VERIFY = \
    0, 2, 3, 4, 5, 6, 7, 8

# pip requirement of each TFLite target; the ranges are those of requirements-board.txt (a test keeps the two
# in step). pip picks the newest wheel the board can take: on glibc < 2.34 (Ubuntu 18.04/20.04) that is at
# most 2.13, whatever the upper bound (docs/deploy.md).
TFLITE_REQUIREMENT = {
    "xu3": "tflite-runtime>=2.7,<=2.13",       # armv7l; 2.14 needs glibc 2.34
    "nano-cpu": "tflite-runtime>=2.7,<=2.14",  # aarch64
}
TFLITE_DEFAULT = "tflite-runtime>=2.7,<=2.14"  # other TFLite targets on Python < 3.9
LITERT = "ai-edge-litert"                      # other TFLite targets on Python 3.9+ (x86_64, aarch64 only)
PYCUDA_REQUIREMENT = "pycuda==2022.1"          # the last pycuda for Python 3.6 (docs/tensorrt.md)
REMOTE_DIR_CHARS = re.compile(r"^[A-Za-z0-9._/+~-]+$")

# Runs on the board with the remote Python (3.6+): what imports, as one JSON line.
PROBE_PY = r"""
import json, platform, sys
info = {"python": list(sys.version_info[:3]), "executable": sys.executable, "machine": platform.machine(),
        "venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix), "modules": {}}
for mod, sub in (("numpy", None), ("pip", None), ("tflite_runtime", "tflite_runtime.interpreter"),
                 ("ai_edge_litert", "ai_edge_litert.interpreter"), ("tensorrt", None), ("pycuda", "pycuda.driver")):
    try:
        m = __import__(mod)
        if sub:
            __import__(sub)
        info["modules"][mod] = {"version": str(getattr(m, "__version__", getattr(m, "VERSION_TEXT", "?")))}
    except Exception as e:  # ImportError, or OSError from a shared library that does not load
        info["modules"][mod] = {"error": ("%s: %s" % (type(e).__name__, e)).splitlines()[0][:200]}
print("DYNN-PROBE " + json.dumps(info))
"""


class DeployError(Exception):
    """Expected failure: `code` is the exit status, the message says what failed and what to do."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


def log(msg):
    print("deploy: %s" % msg, flush=True)


# ---------------------------------------------------------------- the bundle, on the host

def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_bundle(bundle):
    """manifest.json of `bundle`, after checking every file it lists against its size and sha256."""
    path = os.path.join(bundle, "manifest.json")
    if not os.path.isfile(path):
        raise DeployError(EXIT_USAGE, "%s is not a bundle (no manifest.json): build one with "
                                      "python build.py --target NAME" % bundle)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except ValueError as e:
        raise DeployError(EXIT_USAGE, "%s is not valid JSON (%s): build the bundle again" % (path, e))
    if manifest.get("schema") != "dynn-bundle":
        raise DeployError(EXIT_USAGE, "%s is not a dynn bundle manifest" % path)
    target = manifest.get("target") or {}
    if target.get("engine") not in ("tflite", "tensorrt", "onnx"):
        raise DeployError(EXIT_USAGE, "%s names no known target engine (%r)" % (path, target.get("engine")))
    for rel, entry in sorted(manifest.get("files", {}).items()):
        p = os.path.join(bundle, *rel.split("/"))
        if not os.path.isfile(p) or os.path.getsize(p) != entry.get("size") or _sha256(p) != entry.get("sha256"):
            raise DeployError(EXIT_USAGE, "%s in %s is missing or fails its sha256 here on the host: build the "
                                          "bundle again (python build.py --target %s)"
                              % (rel, bundle, target.get("name")))
    return manifest


def _excluded(name):
    return name in EXCLUDE_DIRS or name.startswith(EXCLUDE_PREFIXES) or name.endswith(EXCLUDE_SUFFIXES)


# ---------------------------------------------------------------- ssh

class Board(object):
    """One board reached over ssh; every remote command runs under `sh -c`, whatever the login shell."""

    def __init__(self, host, user=None, port=None, identity=None, options=(), connect_timeout=10):
        self.host, self.user, self.port = host, user, port
        self.dest = "%s@%s" % (user, host) if user else host
        self.where = "%s:%s" % (self.dest, port or 22)
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=%d" % connect_timeout,
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if port:
            opts += ["-p", str(port)]
        if identity:
            opts += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        for o in options:
            opts += ["-o", o]
        self.ssh_opts = opts

    def argv(self, script, tty=False):
        return ["ssh"] + self.ssh_opts + (["-t"] if tty else []) + [self.dest, "sh -c %s" % shlex.quote(script)]

    def rsh(self):
        """The ssh command line for rsync -e."""
        return " ".join(shlex.quote(a) for a in ["ssh"] + self.ssh_opts)

    def run(self, script, what, capture=False, stdin=None, tty=False):
        """Run `script` on the board; ssh's own failure (255) raises the connection error."""
        kw = {"stdin": subprocess.DEVNULL if stdin is None and not tty else stdin}
        if capture:
            kw.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        proc = subprocess.run(self.argv(script, tty), **kw)
        if proc.returncode == 255:
            raise self.connection_error(what, proc.stderr if capture else "")
        return proc

    def connection_error(self, what, stderr=""):
        lines = [l.strip() for l in (stderr or "").splitlines() if l.strip()]
        why = " (%s)" % lines[-1] if lines else ""
        return DeployError(EXIT_CONNECT, "%s: ssh failed while %s%s: check that the board is on and reachable, "
                                         "that sshd runs, and that the key is authorized (ssh -p %s %s)"
                           % (self.where, what, why, self.port or 22, self.dest))


def quote_python(python):
    """--python as shell words: the command may carry options (`python3 -S`)."""
    return " ".join(shlex.quote(w) for w in shlex.split(python))


# ---------------------------------------------------------------- the steps

def probe(board, remote_dir, python, bundle_name):
    """Connect once: create DIR, report its absolute path, what exists, rsync, and what the Python imports."""
    script = "\n".join([
        "d=%s" % shlex.quote(remote_dir),
        'mkdir -p -- "$d" && cd -- "$d" || { echo "DYNN-DIR-ERROR"; exit 0; }',
        'echo "DYNN-DIR $(pwd -P)"',
        "for p in runtime board_scripts bundles/%s; do [ -d \"$p\" ] && echo \"DYNN-LIVE $p\"; done"
        % shlex.quote(bundle_name),
        'command -v rsync >/dev/null 2>&1 && echo "DYNN-RSYNC yes"',
        'command -v tar >/dev/null 2>&1 && echo "DYNN-TAR yes"',
        "%s - <<'DYNN_PY_EOF' || echo \"DYNN-PYTHON-ERROR $?\"" % quote_python(python),
        PROBE_PY.strip(),
        "DYNN_PY_EOF",
    ])
    proc = board.run(script, "connecting", capture=True)
    out = {"live": set(), "rsync": False, "tar": False, "dir": None, "python": None}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "DYNN-DIR":
            out["dir"] = value
        elif key == "DYNN-DIR-ERROR":
            raise DeployError(EXIT_COPY, "%s: cannot create or enter the directory %s: pick a writable --dir"
                              % (board.where, remote_dir))
        elif key == "DYNN-LIVE":
            out["live"].add(value)
        elif key == "DYNN-RSYNC":
            out["rsync"] = True
        elif key == "DYNN-TAR":
            out["tar"] = True
        elif key == "DYNN-PROBE":
            out["python"] = json.loads(value)
        elif key == "DYNN-PYTHON-ERROR":
            err = [l for l in proc.stderr.splitlines() if l.strip()]
            raise DeployError(EXIT_REQUIREMENTS, "%s: the remote Python `%s` does not run (%s): pass --python with "
                                                 "the board's interpreter, e.g. --python python3.8"
                              % (board.where, python, err[-1].strip() if err else "exit %s" % value))
    if out["dir"] is None or out["python"] is None:
        err = [l for l in proc.stderr.splitlines() if l.strip()]
        raise DeployError(EXIT_CONNECT, "%s: the board's shell did not answer as expected (%s): check that "
                                        "`ssh %s sh -c true` works"
                          % (board.where, err[-1].strip() if err else "no output", board.dest))
    return out


def _version_tuple(text):
    nums = re.findall(r"\d+", str(text).split("+")[0])[:3]
    return tuple(int(n) for n in nums) + (0,) * (3 - len(nums))


def in_range(version, requirement):
    """Does `version` satisfy a `name>=A,<=B` requirement (only >=, <=, ==, <, > are used here)?"""
    v = _version_tuple(version)
    spec = re.sub(r"^[A-Za-z0-9_.-]+", "", requirement)
    for clause in filter(None, spec.split(",")):
        m = re.match(r"\s*(>=|<=|==|<|>)\s*([\d.]+)\s*$", clause)
        if not m:
            return False
        op, bound = m.group(1), _version_tuple(m.group(2))
        ok = {">=": v >= bound, "<=": v <= bound, "==": v == bound, "<": v < bound, ">": v > bound}[op]
        if not ok:
            return False
    return True


def _mod(info, name):
    return info["modules"].get(name, {})


def _ok(info, name):
    return "version" in _mod(info, name)


def tflite_missing(info, requirement):
    """None when the board has numpy and a TFLite binding the runtime can use, else what is missing."""
    if not _ok(info, "numpy"):
        return "numpy (%s)" % _mod(info, "numpy").get("error")
    if _ok(info, "ai_edge_litert"):
        return None
    tfl = _mod(info, "tflite_runtime")
    wanted = requirement if requirement.startswith("tflite-runtime") else TFLITE_DEFAULT
    if "version" in tfl:
        if in_range(tfl["version"], wanted):
            return None
        return "%s (found tflite-runtime %s)" % (wanted, tfl["version"])
    return "a TFLite binding, %s (%s)" % (requirement, tfl.get("error"))


def pip_install(board, python, info, requirements, env=""):
    user = [] if info["venv"] else ["--user"]  # a virtual environment takes no --user
    cmd = "%s%s -m pip install %s" % (env, quote_python(python),
                                      " ".join(shlex.quote(a) for a in user + list(requirements)))
    log("on %s: %s" % (board.where, cmd))
    proc = board.run(cmd, "running pip")
    return proc.returncode == 0, cmd


def requirements(board, python, manifest, info, install, remote_dir):
    """Check (and unless install is False, pip-install) what this bundle's target needs on the board."""
    target = manifest["target"]
    name, engine = target["name"], target["engine"]
    py = tuple(info["python"])
    need_py = _version_tuple(target.get("runtime_python", "3.6"))[:2]
    pyname = "Python %d.%d.%d (%s)" % (py[0], py[1], py[2], info["executable"])
    if py[:2] < need_py:
        why = " (tflite-runtime 2.5.0, the last for Python 3.6, has no signature runners)" if engine == "tflite" \
            else ""
        raise DeployError(EXIT_REQUIREMENTS, "%s: target %s needs Python %d.%d+, the board's `%s` is %s%s: "
                                             "install a newer interpreter and pass it with --python"
                          % (board.where, name, need_py[0], need_py[1], python, pyname, why))
    if engine == "tflite":
        req = TFLITE_REQUIREMENT.get(name) or (LITERT if py[:2] >= (3, 9) else TFLITE_DEFAULT)
        missing = tflite_missing(info, req)
        if missing is None:
            binding = "ai_edge_litert" if _ok(info, "ai_edge_litert") else "tflite_runtime"
            log("%s has numpy %s and %s %s" % (board.where, _mod(info, "numpy")["version"], binding,
                                               _mod(info, binding)["version"]))
            return
        reqs = [req] + ([] if _ok(info, "numpy") else ["numpy>=1.16"])
        cmd = "%s -m pip install %s%s" % (python, "" if info["venv"] else "--user ",
                                          " ".join(shlex.quote(r) for r in reqs))
        if not install:
            raise DeployError(EXIT_REQUIREMENTS, "%s: target %s needs %s, which %s lacks: run on the board `%s` "
                                                 "(or deploy without --no-install)" % (board.where, name, missing,
                                                                                       pyname, cmd))
        if not _ok(info, "pip"):
            raise DeployError(EXIT_REQUIREMENTS, "%s: %s has no pip to install %s: sudo apt-get install "
                                                 "python3-pip (for that interpreter), then deploy again"
                              % (board.where, pyname, req))
        if not _ok(info, "numpy") and info["machine"].startswith("armv7"):
            log("note: PyPI has no armv7l numpy wheels, so pip compiles numpy (slow); "
                "`sudo apt-get install python3-numpy` is quicker where it matches this Python")
        ok, cmd = pip_install(board, python, info, reqs)
        if not ok:
            raise DeployError(EXIT_REQUIREMENTS, "%s: `%s` failed (output above): fix it on the board, or install "
                                                 "a wheel by hand and deploy with --no-install" % (board.where, cmd))
        after = probe(board, remote_dir, python, manifest["target"]["name"])["python"]
        missing = tflite_missing(after, req)
        if missing is not None:
            raise DeployError(EXIT_REQUIREMENTS, "%s: after pip, %s still lacks %s: see docs/deploy.md for the "
                                                 "wheels this board can take" % (board.where, pyname, missing))
        return
    if engine == "tensorrt":
        if not _ok(info, "tensorrt"):
            raise DeployError(EXIT_REQUIREMENTS, "%s: TensorRT's Python bindings do not import with %s (%s): they "
                                                 "come with JetPack 4.6.1+ (sudo apt-get install python3-libnvinfer) "
                                                 "and exist only for the system Python 3.6: pass --python "
                                                 "/usr/bin/python3" % (board.where, pyname,
                                                                       _mod(info, "tensorrt").get("error")))
        if not _ok(info, "numpy"):
            raise DeployError(EXIT_REQUIREMENTS, "%s: numpy does not import with %s: sudo apt-get install "
                                                 "python3-numpy" % (board.where, pyname))
        if not _ok(info, "pycuda"):
            cmd = "PATH=/usr/local/cuda/bin:$PATH %s -m pip install --user %s" % (python, PYCUDA_REQUIREMENT)
            if not install:
                raise DeployError(EXIT_REQUIREMENTS, "%s: pycuda does not import with %s (%s): run on the board "
                                                     "`%s` (it compiles there; needs JetPack's CUDA)"
                                  % (board.where, pyname, _mod(info, "pycuda").get("error"), cmd))
            log("pycuda is missing: compiling %s on the board (needs nvcc; takes several minutes)"
                % PYCUDA_REQUIREMENT)
            ok, cmd = pip_install(board, python, info, [PYCUDA_REQUIREMENT], env="PATH=/usr/local/cuda/bin:$PATH ")
            if not ok:
                raise DeployError(EXIT_REQUIREMENTS, "%s: `%s` failed (output above): pycuda compiles against "
                                                     "JetPack's CUDA, check /usr/local/cuda/bin/nvcc exists "
                                                     "(sudo apt-get install nvidia-jetpack)" % (board.where, cmd))
        log("%s has TensorRT %s and pycuda" % (board.where, _mod(info, "tensorrt")["version"]))
        return
    if not _ok(info, "numpy"):  # onnx targets: the runtime's ONNX backend is the host's (onnxruntime)
        raise DeployError(EXIT_REQUIREMENTS, "%s: numpy does not import with %s" % (board.where, pyname))


def make_staging(board, remote_dir):
    proc = board.run('d=$(mktemp -d %s/.deploy-XXXXXX) && mkdir -p "$d/bundles" && echo "$d"'
                     % shlex.quote(remote_dir), "creating a staging directory", capture=True)
    staging = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else ""
    if not staging:
        raise DeployError(EXIT_COPY, "%s: cannot create a staging directory in %s (%s): check free space and "
                                     "permissions there" % (board.where, remote_dir, proc.stderr.strip()))
    return staging


def copy_rsync(board, bundle, name, staging, remote_dir, live):
    """rsync into the staging directory; files that did not change are hard-linked from the live copy."""
    base = ["rsync", "-rlpt", "-e", board.rsh()] + ["--exclude=%s/" % d for d in EXCLUDE_DIRS] + \
        ["--exclude=%s*" % p for p in EXCLUDE_PREFIXES] + ["--exclude=*%s" % s for s in EXCLUDE_SUFFIXES]
    code = base + (["--link-dest=%s/" % remote_dir] if set(COPIED) <= live else []) + \
        [os.path.join(ROOT, d) for d in COPIED] + ["%s:%s/" % (board.dest, staging)]
    data = base + (["--link-dest=%s/bundles/%s/" % (remote_dir, name)] if "bundles/" + name in live else []) + \
        [bundle.rstrip("/") + "/", "%s:%s/bundles/%s/" % (board.dest, staging, name)]
    for argv in (code, data):
        rc = subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
        if rc != 0:
            raise DeployError(EXIT_COPY, "%s: rsync failed (exit %d, output above): check free space in %s, or "
                                         "retry with --copy tar" % (board.where, rc, remote_dir))


def _tar_filter(info):
    if any(_excluded(part) for part in info.name.split("/")):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def copy_tar(board, bundle, name, staging):
    """A tar stream over ssh, for boards without rsync."""
    script = "cd %s && tar -xf -" % shlex.quote(staging)
    proc = subprocess.Popen(board.argv(script), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    broken = False
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            for d in COPIED:
                tf.add(os.path.join(ROOT, d), arcname=d, filter=_tar_filter)
            tf.add(bundle, arcname="bundles/" + name, filter=_tar_filter)
    except BrokenPipeError:
        broken = True
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            broken = True
    err = proc.stderr.read().decode("utf-8", "replace")
    rc = proc.wait()
    if rc == 255:
        raise board.connection_error("copying with tar", err)
    if rc != 0 or broken:
        lines = [l for l in err.splitlines() if l.strip()]
        raise DeployError(EXIT_COPY, "%s: copying with tar failed (%s): check free space in %s and that tar "
                                     "exists there" % (board.where, lines[-1].strip() if lines else "exit %d" % rc,
                                                       os.path.dirname(staging)))


def install_udev(board, staging):
    script = ('u=$(id -un); s=%s/board_scripts/install_udev_rule.sh; '
              'if [ "$(id -u)" = 0 ]; then sh "$s" "$u"; else sudo %s sh "$s" "$u"; fi')
    tty = sys.stdin.isatty()  # from a terminal sudo may ask for the password; otherwise it must not
    proc = board.run(script % (shlex.quote(staging), "" if tty else "-n"), "installing the udev rule", tty=tty)
    if proc.returncode != 0:
        raise DeployError(EXIT_UDEV, "%s: installing the udev rule failed (output above): it needs root; deploy "
                                     "from a terminal so sudo can ask for the password, or give the user "
                                     "passwordless sudo, or run later on the board: sudo sh "
                                     "board_scripts/install_udev_rule.sh" % board.where)


def build_engine(board, python, staging, name, mode):
    cmd = "cd %s && %s board_scripts/trt_build.py bundles/%s --mode %s" % (
        shlex.quote(staging), quote_python(python), shlex.quote(name), shlex.quote(mode))
    log("building the TensorRT engine on the board (%s mode; minutes on a Nano)" % mode)
    if board.run(cmd, "building the TensorRT engine").returncode != 0:
        raise DeployError(EXIT_TRT, "%s: building the TensorRT engine failed (output above); the previous "
                                    "deployment is untouched: fix what trt_build.py says and deploy again"
                          % board.where)


def verify(board, python, staging, name, target_name):
    cmd = "cd %s && %s -m runtime verify %s" % (shlex.quote(staging), quote_python(python),
                                                shlex.quote("bundles/" + name))
    log("verifying the golden vectors on the board")
    rc = board.run(cmd, "running verify").returncode
    if rc != 0:
        raise DeployError(EXIT_VERIFY, "%s: `python -m runtime verify` FAILED for bundle %s (exit %d, output "
                                       "above); the previous deployment is untouched: rebuild the bundle "
                                       "(python build.py --target %s) and deploy again"
                          % (board.where, name, rc, target_name))


def swap_in(board, staging, remote_dir, name):
    """Rename the verified copy into place; the old one goes into the staging directory, which is then removed."""
    script = "\n".join([
        "set -e",
        "cd %s" % shlex.quote(remote_dir),
        "s=%s; n=%s" % (shlex.quote(staging), shlex.quote(name)),
        'mkdir -p bundles "$s/.old"',
        'swap() { if [ -e "$2" ] || [ -L "$2" ]; then mv -- "$2" "$s/.old/$3"; fi; mv -- "$1" "$2"; }',
        'swap "$s/runtime" runtime runtime',
        'swap "$s/board_scripts" board_scripts board_scripts',
        'swap "$s/bundles/$n" "bundles/$n" bundle',
        'rm -rf -- "$s"',
    ])
    proc = board.run(script, "moving the new files into place", capture=True)
    if proc.returncode != 0:
        raise DeployError(EXIT_COPY, "%s: moving the verified copy into %s failed (%s): look at %s on the board"
                          % (board.where, remote_dir, proc.stderr.strip(), staging))


def remove_staging(board, staging):
    try:
        board.run("rm -rf -- %s" % shlex.quote(staging), "cleaning up", capture=True)
    except DeployError:
        log("could not remove %s on %s (the connection is gone); it is safe to delete" % (staging, board.where))


def deploy(args):
    bundle = os.path.abspath(args.bundle)
    manifest = read_bundle(bundle)
    target = manifest["target"]
    name = args.name or os.path.basename(bundle.rstrip("/"))
    if not REMOTE_DIR_CHARS.match(args.dir) or not re.match(r"^[A-Za-z0-9._+-]+$", name) or name in (".", ".."):
        raise DeployError(EXIT_USAGE, "--dir %r or bundle name %r has characters this script does not pass to a "
                                      "remote shell: use letters, digits and . _ - + /" % (args.dir, name))
    if args.identity and not os.path.isfile(args.identity):
        raise DeployError(EXIT_USAGE, "the ssh key %s does not exist: pass the private key file to --identity"
                          % args.identity)
    remote_dir = args.dir[2:] if args.dir.startswith("~/") else args.dir
    board = Board(args.host, args.user, args.port, args.identity, args.ssh_option, args.connect_timeout)

    log("[1/6] connecting to %s" % board.where)
    found = probe(board, remote_dir, args.python, name)
    remote_dir, info = found["dir"], found["python"]
    log("%s: %s, Python %s, directory %s" % (board.where, info["machine"], ".".join(map(str, info["python"])),
                                             remote_dir))

    log("[2/6] requirements of target %s (%s)" % (target["name"], target["engine"]))
    if args.skip_requirements:
        log("skipped (--skip-requirements)")
    else:
        requirements(board, args.python, manifest, info, not args.no_install, remote_dir)

    use_rsync = args.copy == "rsync" or (args.copy == "auto" and found["rsync"] and shutil.which("rsync"))
    if args.copy == "rsync" and not (found["rsync"] and shutil.which("rsync")):
        raise DeployError(EXIT_COPY, "%s: --copy rsync, but rsync is missing %s: install it or use --copy tar"
                          % (board.where, "on the board" if not found["rsync"] else "on this host"))
    if not use_rsync and not found["tar"]:
        raise DeployError(EXIT_COPY, "%s: the board has neither rsync nor tar: sudo apt-get install rsync"
                          % board.where)
    staging = make_staging(board, remote_dir)
    done = False
    try:
        log("[3/6] copying runtime/, board_scripts/ and %s with %s" % (name, "rsync" if use_rsync else "tar"))
        if use_rsync:
            copy_rsync(board, bundle, name, staging, remote_dir, found["live"])
        else:
            copy_tar(board, bundle, name, staging)
        log("[4/6] udev rule: %s" % ("installing" if args.udev else "skipped (no --udev)"))
        if args.udev:
            install_udev(board, staging)
        log("[5/6] TensorRT engine: %s" % ("building" if target["engine"] == "tensorrt" else "not needed"))
        if target["engine"] == "tensorrt":
            build_engine(board, args.python, staging, name, args.trt_mode)
        log("[6/6] verify")
        verify(board, args.python, staging, name, target["name"])
        swap_in(board, staging, remote_dir, name)
        done = True
    finally:
        if not done:
            remove_staging(board, staging)
    log("%s: bundle %s deployed to %s/bundles/%s and verified; on the board: cd %s && %s -m runtime info "
        "bundles/%s" % (board.where, name, remote_dir, name, remote_dir, args.python, name))


def build_parser():
    p = argparse.ArgumentParser(prog="deploy.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n\n", 2)[2:]))
    p.add_argument("bundle", metavar="BUNDLE_DIR", help="bundle directory on this host (holds manifest.json)")
    p.add_argument("--host", required=True, help="board host name or address")
    p.add_argument("--user", default=None, help="ssh user (default: ssh's own choice)")
    p.add_argument("--dir", default="dynn", help="remote directory, relative to the user's home unless absolute "
                                                 "(default: dynn)")
    p.add_argument("--port", type=int, default=None, help="ssh port (default 22)")
    p.add_argument("--identity", default=None, metavar="KEY", help="ssh private key file")
    p.add_argument("--python", default="python3", help="the board's Python command (default python3; nano-gpu "
                                                       "needs the system python3 with JetPack's TensorRT)")
    p.add_argument("--name", default=None, help="name under DIR/bundles (default: the bundle directory's name)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-install", action="store_true",
                   help="check the board's requirements but install nothing (fail with the pip command instead)")
    g.add_argument("--skip-requirements", action="store_true",
                   help="neither check nor install requirements (verify will tell)")
    p.add_argument("--udev", action="store_true",
                   help="install the udev rule for sysfs clock permissions (root on the board: sudo)")
    p.add_argument("--trt-mode", choices=("if", "per-group"), default="if", help="nano-gpu engine mode (default if)")
    p.add_argument("--copy", choices=("auto", "rsync", "tar"), default="auto",
                   help="auto: rsync when both sides have it, else tar over ssh")
    p.add_argument("--ssh-option", action="append", default=[], metavar="OPTION",
                   help="extra ssh -o option, repeatable (e.g. StrictHostKeyChecking=accept-new)")
    p.add_argument("--connect-timeout", type=int, default=10, metavar="S", help="ssh ConnectTimeout (default 10)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    where = "%s@%s:%s" % (args.user, args.host, args.port or 22) if args.user else "%s:%s" % (args.host,
                                                                                              args.port or 22)
    if shutil.which("ssh") is None:
        print("deploy: %s: no ssh client on this host: install openssh-client" % where, file=sys.stderr)
        return EXIT_USAGE
    try:
        deploy(args)
    except DeployError as e:
        msg = str(e)
        print("deploy: %s" % (msg if msg.startswith(where) else "%s: %s" % (where, msg)), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("deploy: %s: interrupted; the previous deployment is untouched (a .deploy-* directory on the "
              "board may be left: it is safe to delete)" % where, file=sys.stderr)
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
