"""Copy the board-side code and the bundle into the staging release: rsync when both sides have it, else tar.

Only what runs on a board is shipped: runtime/ and board_scripts/ without its host-side parts (this tool,
the Ansible playbook). compile/, bench/ and build.py never leave the host.
"""
import os
import shlex
import subprocess
import tarfile

from .errors import DeployError, EXIT_COPY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = ("runtime", "board_scripts")
HOST_ONLY = ("board_scripts/deploy.py", "board_scripts/deployment", "board_scripts/ansible")
JUNK_DIRS = ("__pycache__",)
JUNK_PREFIXES = (".trt-build-",)  # leftovers of interrupted engine builds
JUNK_SUFFIXES = (".pyc",)


def _excluded(relpath):
    parts = relpath.split("/")
    return relpath in HOST_ONLY or any(p in JUNK_DIRS or p.startswith(JUNK_PREFIXES) or p.endswith(JUNK_SUFFIXES)
                                       for p in parts)


def rsync_excludes():
    return (["--exclude=/%s" % p for p in HOST_ONLY] + ["--exclude=%s/" % d for d in JUNK_DIRS]
            + ["--exclude=%s*" % p for p in JUNK_PREFIXES] + ["--exclude=*%s" % s for s in JUNK_SUFFIXES])


def copy_rsync(board, bundle, name, staging, remote_dir, has_current, has_bundle):
    """Files that did not change are hard-linked from the live release, so a redeploy sends only changes."""
    base = ["-rlpt"] + rsync_excludes()
    live = "%s/current/" % remote_dir
    code = board.rsync_argv(base + (["--link-dest=%s" % live] if has_current else []),
                            [os.path.join(ROOT, d) for d in SHIPPED], staging + "/")
    data = board.rsync_argv(base + (["--link-dest=%sbundles/%s/" % (live, name)] if has_bundle else []),
                            [bundle.rstrip("/") + "/"], "%s/bundles/%s/" % (staging, name))
    for argv in (code, data):
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
        if proc.returncode != 0:
            raise board.failure("copying with rsync", proc, "check free space in %s, or retry with --copy tar"
                                % remote_dir, EXIT_COPY)


def _tar_filter(info):
    if _excluded(info.name):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def copy_tar(board, bundle, name, staging):
    """One tar stream over ssh, for boards without rsync."""
    proc = subprocess.Popen(board.argv("cd -- %s && tar -xf -" % shlex.quote(staging)),
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    broken = False
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            for d in SHIPPED:
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
        raise DeployError("%s: copying with tar failed (%s): check free space in %s and that tar exists there"
                          % (board.where, lines[-1].strip() if lines else "exit %d" % rc, os.path.dirname(staging)),
                          EXIT_COPY)
