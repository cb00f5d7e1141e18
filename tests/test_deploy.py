"""board_scripts/deploy.py against a real sshd on 127.0.0.1, started here with a throwaway key.

The "board" is this machine: the remote Python is the interpreter running pytest, so the test needs no
tflite-runtime wheel. Needs openssh-server (/usr/sbin/sshd) and rsync: in CI (CI=true) their absence is a
failure, elsewhere a skip. Install: apt-get install -y openssh-server rsync
"""
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

DEPLOY = os.path.join(ROOT, "board_scripts", "deploy.py")
SSHD = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:/sbin:" + os.environ.get("PATH", ""))
INSTALL = "apt-get install -y openssh-server rsync"
EXIT_CONNECT, EXIT_REQUIREMENTS, EXIT_VERIFY = 3, 5, 8


def _need(ok, what):
    if ok:
        return
    msg = "%s: install with `%s`" % (what, INSTALL)
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("CI must run the deploy test: " + msg, pytrace=False)
    pytest.skip(msg)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A private sshd on 127.0.0.1:<free port> that accepts only a fresh ed25519 key; stopped afterwards."""
    _need(SSHD is not None, "no sshd (openssh-server) on this machine")
    _need(shutil.which("ssh-keygen") and shutil.which("ssh"), "no ssh client (openssh-client)")
    _need(shutil.which("rsync"), "no rsync")
    d = tmp_path_factory.mktemp("sshd")
    key, host_key = str(d / "id_ed25519"), str(d / "host_ed25519")
    for path in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dynn-test", "-f", path], check=True)
    shutil.copy(key + ".pub", str(d / "authorized_keys"))
    os.chmod(str(d / "authorized_keys"), 0o600)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    port = _free_port()
    config = d / "sshd_config"
    config.write_text("\n".join([
        "Port %d" % port, "ListenAddress 127.0.0.1", "HostKey %s" % host_key,
        "AuthorizedKeysFile %s" % (d / "authorized_keys"), "PidFile %s" % (d / "sshd.pid"),
        "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "AllowTcpForwarding no",
        "X11Forwarding no", "PrintMotd no", "LogLevel ERROR", ""]))
    log = open(str(d / "sshd.log"), "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 10
    while True:
        if proc.poll() is not None:
            log.close()
            pytest.fail("sshd exited at once (%s): %s" % (proc.returncode, (d / "sshd.log").read_text().strip()))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                pytest.fail("sshd did not listen on 127.0.0.1:%d within 10 s" % port)
            time.sleep(0.1)
    yield {"port": port, "key": key, "user": _user(), "dir": d}
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _user():
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name


def deploy(sshd, bundle, target_dir, *extra, port=None):
    argv = [sys.executable, DEPLOY, str(bundle), "--host", "127.0.0.1", "--port", str(port or sshd["port"]),
            "--user", sshd["user"], "--identity", sshd["key"], "--dir", str(target_dir),
            "--python", sys.executable, "--connect-timeout", "5",
            "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null",
            "--ssh-option", "LogLevel=ERROR"] + list(extra)
    return subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


def last_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else ""


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def no_staging_left(target):
    return not [n for n in os.listdir(str(target)) if n.startswith(".deploy-")]


@pytest.fixture(scope="module")
def deployed(sshd, host_bundle, tmp_path_factory):
    """One successful deploy with rsync (and requirements checked, not installed): the others build on it."""
    target = tmp_path_factory.mktemp("board") / "dynn"
    r = deploy(sshd, host_bundle, target, "--no-install")
    return target, r


def test_deploy_with_rsync_verifies_on_the_board(deployed, host_bundle):
    target, r = deployed
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: PASSED" in r.stdout
    assert "with rsync" in r.stdout
    live = target / "bundles" / "host-cpu"
    for rel in json.loads((live / "manifest.json").read_text())["files"]:
        assert sha(str(live / rel)) == sha(os.path.join(host_bundle, rel)), rel
    assert (target / "runtime" / "__main__.py").is_file()
    assert (target / "board_scripts" / "trt_build.py").is_file()
    assert no_staging_left(target)


def test_redeploy_with_tar_replaces_the_live_copy(sshd, deployed, host_bundle):
    target, _ = deployed
    (target / "bundles" / "host-cpu" / "stale-file").write_text("from an older deploy")
    r = deploy(sshd, host_bundle, target, "--copy", "tar", "--skip-requirements")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "with tar" in r.stdout and "verify: PASSED" in r.stdout
    assert not (target / "bundles" / "host-cpu" / "stale-file").exists()
    assert sha(str(target / "bundles" / "host-cpu" / "golden.npz")) == sha(os.path.join(host_bundle, "golden.npz"))
    assert no_staging_left(target)


def _tampered_bundle(src, dst):
    """A copy whose golden outputs are wrong but whose manifest checksums match: only verify can tell."""
    shutil.copytree(src, dst)
    path = os.path.join(dst, "golden.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["level1"] = arrays["level1"] + 1.0
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    man_path = os.path.join(dst, "manifest.json")
    with open(man_path) as f:
        man = json.load(f)
    man["files"]["golden.npz"] = {"size": os.path.getsize(path), "sha256": sha(path)}
    with open(man_path, "w") as f:
        json.dump(man, f, indent=2)
    return dst


def test_failed_verify_exits_8_and_keeps_the_previous_deployment(sshd, deployed, host_bundle, tmp_path):
    target, _ = deployed
    before = sha(str(target / "bundles" / "host-cpu" / "manifest.json"))
    bad = _tampered_bundle(host_bundle, str(tmp_path / "host-cpu"))
    r = deploy(sshd, bad, target, "--skip-requirements")
    assert r.returncode == EXIT_VERIFY, r.stdout + r.stderr
    assert "MISMATCH" in r.stdout and "verify: FAILED" in r.stdout
    line = last_line(r.stderr)
    assert line.startswith("deploy: %s@127.0.0.1:%d: " % (sshd["user"], sshd["port"])), line
    assert "verify` FAILED for bundle host-cpu" in line and "previous deployment is untouched" in line
    assert sha(str(target / "bundles" / "host-cpu" / "manifest.json")) == before
    assert no_staging_left(target)


def test_failed_connection_exits_3_with_one_clear_line(sshd, host_bundle, tmp_path):
    port = _free_port()  # nothing listens there
    t = time.time()
    r = deploy(sshd, host_bundle, tmp_path / "never", port=port)
    assert r.returncode == EXIT_CONNECT, r.stdout + r.stderr
    line = last_line(r.stderr)
    assert line.startswith("deploy: %s@127.0.0.1:%d: ssh failed while connecting" % (sshd["user"], port)), line
    assert "refused" in line.lower(), line
    assert time.time() - t < 30
    assert not (tmp_path / "never").exists()


def test_missing_requirement_exits_5_with_the_pip_command(sshd, host_bundle, tmp_path):
    # `python -S` has no site-packages: no numpy, no TFLite binding, as on a fresh board
    r = deploy(sshd, host_bundle, tmp_path / "bare", "--no-install", "--python", "%s -S" % sys.executable)
    assert r.returncode == EXIT_REQUIREMENTS, r.stdout + r.stderr
    line = last_line(r.stderr)
    assert "target host-cpu needs" in line and "-m pip install" in line, line
    assert "ai-edge-litert" in line or "tflite-runtime>=2.7" in line, line
    assert not (tmp_path / "bare" / "bundles").exists()


PY36 = next((p for p in ["/usr/bin/python3.6", os.path.expanduser("~/.pyenv/versions/3.6.15/bin/python3.6")]
             if os.path.exists(p)), None)  # real interpreters, not pyenv shims (they need pyenv's environment)


@pytest.mark.skipif(PY36 is None, reason="no python3.6 interpreter here")
def test_too_old_python_exits_5_naming_the_version(sshd, host_bundle, tmp_path):
    r = deploy(sshd, host_bundle, tmp_path / "old", "--python", PY36)
    assert r.returncode == EXIT_REQUIREMENTS, r.stdout + r.stderr
    line = last_line(r.stderr)
    assert "target host-cpu needs Python 3.8+" in line and "3.6." in line and "--python" in line, line


def _load_deploy_module():
    spec = importlib.util.spec_from_file_location("dynn_deploy", DEPLOY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tflite_ranges_match_requirements_board_txt():
    mod = _load_deploy_module()
    with open(os.path.join(ROOT, "requirements-board.txt")) as f:
        text = f.read()
    for label, target in (("Odroid XU3", "xu3"), ("Jetson Nano CPU", "nano-cpu")):
        m = re.search(r"^#\s*%s \([^)]*\):\s*(\S+)" % re.escape(label), text, re.M)
        assert m, "requirements-board.txt has no line for %s" % label
        assert mod.TFLITE_REQUIREMENT[target] == m.group(1), (target, m.group(1))
    assert mod.in_range("2.13.0", "tflite-runtime>=2.7,<=2.13")
    assert not mod.in_range("2.14.0", "tflite-runtime>=2.7,<=2.13")
    assert not mod.in_range("2.5.0", "tflite-runtime>=2.7,<=2.14")


@pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-core is not installed (optional)")
def test_ansible_playbook_syntax():
    d = os.path.join(ROOT, "board_scripts", "ansible")
    r = subprocess.run(["ansible-playbook", "--syntax-check", "-i", os.path.join(d, "inventory.example.ini"),
                        os.path.join(d, "deploy.yml")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=120)
    assert r.returncode == 0, r.stdout
