"""The remote steps of a deploy, each one ssh call: probe, requirements, udev, and the runtime's own tools.

Everything that runs a bundle on the board is `python -m runtime COMMAND` run in the staging release:
trt-build (runtime/trt/builder.py), doctor (runtime/doctor.py), verify.
"""
import json
import shlex
import sys

from . import needs, release
from .errors import DeployError, EXIT_CONNECT, EXIT_COPY, EXIT_REQUIREMENTS, EXIT_TRT, EXIT_UDEV, EXIT_VERIFY
from .ssh import quote_python


def log(msg):
    print("deploy: %s" % msg, flush=True)


def probe(board, remote_dir, python, bundle_name, modules):
    """Connect once: create DIR; its absolute path, the live release, rsync and tar, what the Python imports."""
    script = "\n".join(release.probe_layout(remote_dir, bundle_name) + [
        'command -v rsync >/dev/null 2>&1 && echo "DYNN-RSYNC yes"',
        'command -v tar >/dev/null 2>&1 && echo "DYNN-TAR yes"',
        "%s - <<'DYNN_PY_EOF' || echo \"DYNN-PYTHON-ERROR $?\"" % quote_python(python),
        needs.probe_script(modules),
        "DYNN_PY_EOF",
    ])
    proc = board.run(script, "connecting", capture=True)
    out = {"current": None, "old": [], "rsync": False, "tar": False, "dir": None, "python": None, "bundle": False}
    err = [l.strip() for l in proc.stderr.splitlines() if l.strip()]
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "DYNN-DIR-ERROR":
            raise DeployError("%s: cannot create or enter the directory %s: pick a writable --dir"
                              % (board.where, remote_dir), EXIT_COPY)
        if key == "DYNN-CURRENT-FOREIGN":
            raise DeployError("%s: %s/current exists and is not the symlink this tool makes: move it away or "
                              "deploy to another --dir" % (board.where, remote_dir), EXIT_COPY)
        if key == "DYNN-PYTHON-ERROR":
            raise DeployError("%s: the remote Python `%s` does not run (%s): pass --python with the board's "
                              "interpreter, e.g. --python python3.8"
                              % (board.where, python, err[-1] if err else "exit %s" % value), EXIT_REQUIREMENTS)
        simple = {"DYNN-DIR": "dir", "DYNN-CURRENT": "current", "DYNN-PROBE": "python"}
        if key in simple:
            out[simple[key]] = json.loads(value) if key == "DYNN-PROBE" else value
        elif key == "DYNN-OLD":
            out["old"].append(value)
        elif key in ("DYNN-RSYNC", "DYNN-TAR", "DYNN-HAS-BUNDLE"):
            out[{"DYNN-RSYNC": "rsync", "DYNN-TAR": "tar", "DYNN-HAS-BUNDLE": "bundle"}[key]] = True
    if out["dir"] is None or out["python"] is None:
        raise DeployError("%s: the board's shell did not answer as expected (%s): check that `ssh -- %s sh -c "
                          "true` works" % (board.where, err[-1] if err else "no output", board.dest), EXIT_CONNECT)
    return out


def requirements(board, python, target, reqs, info, install, modules):
    """Check what the target needs; unless install is False, pip-install what pip can, then check again."""
    needs.check_python(target, info, python, board.where)
    gaps = needs.missing(reqs, info["modules"])
    if gaps and install and all("pip" in r for r, _ in gaps):
        for r, why in gaps:
            cmd = needs.pip_command(python, info, r)
            log("on %s: %s (missing: %s)" % (board.where, cmd, why))
            proc = board.run(cmd, "running pip")
            if proc.returncode != 0:
                raise DeployError("%s: `%s` failed (exit %d, output above): %s" % (
                    board.where, cmd, proc.returncode, r["fix"] or "see pip's message"), EXIT_REQUIREMENTS)
        again = board.run("%s - <<'DYNN_PY_EOF'\n%s\nDYNN_PY_EOF" % (quote_python(python),
                                                                      needs.probe_script(modules)),
                          "checking the installed packages", capture=True)
        line = [l for l in again.stdout.splitlines() if l.startswith("DYNN-PROBE ")]
        info = json.loads(line[-1].split(" ", 1)[1]) if line else info
        gaps = needs.missing(reqs, info["modules"])
    if gaps:
        raise needs.refuse(board.where, target, gaps, python, info, install)
    log("%s has %s" % (board.where, ", ".join("%s %s" % (m, v.get("version")) for m, v in
                                              sorted(info["modules"].items()) if "version" in v)))


def install_udev(board, staging):
    script = ('u=$(id -un); s=%s/board_scripts/install_udev_rule.sh; '
              'if [ "$(id -u)" = 0 ]; then sh "$s" "$u"; else sudo %s sh "$s" "$u"; fi')
    tty = sys.stdin.isatty()  # from a terminal sudo may ask for the password; otherwise it must not
    proc = board.run(script % (shlex.quote(staging), "" if tty else "-n"), "installing the udev rule", tty=tty)
    if proc.returncode != 0:
        raise DeployError("%s: installing the udev rule failed (output above): it needs root; deploy from a "
                          "terminal so sudo can ask for the password, or give the user passwordless sudo, or "
                          "run later on the board: sudo sh board_scripts/install_udev_rule.sh" % board.where,
                          EXIT_UDEV)


def runtime_tool(board, python, staging, command, bundle_name, extra=()):
    """`python -m runtime COMMAND bundles/NAME ...` in the staging release; returns its exit status."""
    cmd = "cd -- %s && %s -m runtime %s %s" % (shlex.quote(staging), quote_python(python), command,
                                              " ".join(shlex.quote(a) for a in ["bundles/" + bundle_name] +
                                                       list(extra)))
    return board.run(cmd, "running python -m runtime %s" % command).returncode


def build_engine(board, python, staging, name, mode):
    log("building the TensorRT engine on the board (python -m runtime trt-build; minutes on a Nano)")
    rc = runtime_tool(board, python, staging, "trt-build", name, ["--mode", mode] if mode else [])
    if rc != 0:
        raise DeployError("%s: `python -m runtime trt-build` failed for bundle %s (exit %d, output above): fix "
                          "what it says and deploy again" % (board.where, name, rc), EXIT_TRT)


def doctor(board, python, staging, name):
    """The read-only board check; what it finds is reported, and verify decides whether the bundle runs."""
    rc = runtime_tool(board, python, staging, "doctor", name)
    if rc != 0:
        log("WARNING: `python -m runtime doctor` exited %d on %s (its report is above); deploying on, verify "
            "decides whether the bundle runs" % (rc, board.where))


def verify(board, python, staging, name, target_name):
    log("verifying the golden vectors on the board")
    rc = runtime_tool(board, python, staging, "verify", name)
    if rc != 0:
        raise DeployError("%s: `python -m runtime verify` FAILED for bundle %s (exit %d, output above): rebuild "
                          "the bundle (python build.py --target %s) and deploy again"
                          % (board.where, name, rc, target_name), EXIT_VERIFY)
