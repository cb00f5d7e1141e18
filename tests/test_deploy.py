"""Deploying (board_scripts/deploy.py, board_scripts.deployment) against a real sshd on 127.0.0.1.

The "board" is this machine: a private sshd started here with a throwaway key, and the remote Python is the
interpreter running pytest. Failures are injected by an `ssh` earlier on PATH that passes every call to the
real ssh except the one whose command line holds a given string, which it fails (exit 1), drops (exit 255,
before or after running it) or interrupts (SIGINT to the deploy). Needs openssh-server and rsync: in CI
(CI=true) their absence is a failure, elsewhere a skip. Install: apt-get install -y openssh-server rsync
"""
import hashlib
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

from board_scripts.deployment import needs, release
from board_scripts.deployment.errors import DeployError
from board_scripts.deployment.ssh import Board, check_destination
from compile.targets import list_targets
from conftest import ROOT

DEPLOY = os.path.join(ROOT, "board_scripts", "deploy.py")
SSHD = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:/sbin:" + os.environ.get("PATH", ""))
INSTALL = "apt-get install -y openssh-server rsync"
EXIT_USAGE, EXIT_CONNECT, EXIT_COPY, EXIT_REQUIREMENTS, EXIT_TRT, EXIT_UDEV, EXIT_VERIFY = 2, 3, 4, 5, 6, 7, 8
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")

# An ssh that fails the call whose arguments contain $DYNN_FAIL_ON, in the way $DYNN_FAIL_HOW says.
FAKE_SSH = r"""#!/bin/sh
real=%s
if [ -n "$DYNN_FAIL_FLAG" ] && [ -e "$DYNN_FAIL_FLAG" ]; then
    echo "Connection closed by 127.0.0.1 (injected, after an earlier drop)" >&2; exit 255
fi
case "$*" in *"$DYNN_FAIL_ON"*) ;; *) exec "$real" "$@" ;; esac
[ -n "$DYNN_FAIL_ON" ] || exec "$real" "$@"
case "$DYNN_FAIL_HOW" in
    exit1) echo "injected failure" >&2; exit 1 ;;
    drop) echo "Connection closed by 127.0.0.1 (injected)" >&2; exit 255 ;;
    drop-after) "$real" "$@"; echo "Connection closed by 127.0.0.1 (injected)" >&2; exit 255 ;;
    drop-rest) touch "$DYNN_FAIL_FLAG"; echo "Connection closed by 127.0.0.1 (injected)" >&2; exit 255 ;;
    sigint) sleep 0.5; kill -INT "$PPID"; exec sleep 30 ;;  # as Ctrl-C while the step runs
esac
echo "fake ssh: unknown DYNN_FAIL_HOW=$DYNN_FAIL_HOW" >&2; exit 99
"""


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
        "X11Forwarding no", "PrintMotd no", "LogLevel ERROR", "MaxStartups 50", ""]))
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
    shim = d / "shim"
    shim.mkdir()
    (shim / "ssh").write_text(FAKE_SSH % shutil.which("ssh"))
    os.chmod(str(shim / "ssh"), 0o755)
    yield {"port": port, "key": key, "user": _user(), "dir": d, "shim": str(shim)}
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


def ssh_args(sshd, port=None):
    return ["--host", "127.0.0.1", "--port", str(port or sshd["port"]), "--user", sshd["user"],
            "--identity", sshd["key"], "--python", sys.executable, "--connect-timeout", "5",
            "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null",
            "--ssh-option", "LogLevel=ERROR"]


def deploy(sshd, bundle, target_dir, *extra, port=None, fail_on=None, how="exit1"):
    """Run the real entry point; with fail_on, the ssh call whose arguments contain it fails as `how` says."""
    env = dict(os.environ, PATH=sshd["shim"] + os.pathsep + os.environ["PATH"], DYNN_FAIL_ON=fail_on or "",
               DYNN_FAIL_HOW=how, DYNN_FAIL_FLAG=str(sshd["dir"] / ("flag-%d" % time.monotonic_ns())))
    argv = [sys.executable, DEPLOY, str(bundle)] + ssh_args(sshd, port) + ["--dir", str(target_dir)] + list(extra)
    return subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          universal_newlines=True, timeout=180)


def last_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else ""


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def staging_left(target):
    d = os.path.join(str(target), "releases")
    return [n for n in os.listdir(d) if n.startswith(release.STAGING_PREFIX)] if os.path.isdir(d) else []


def releases(target):
    return sorted(n for n in os.listdir(os.path.join(str(target), "releases"))
                  if re.match(r"^\d{8}T\d{6}Z-\w{6}$", n))


def live(target):
    return os.readlink(os.path.join(str(target), "current"))


def verifies_on_the_board(target, name="host-cpu"):
    """The deployed runtime verifies the deployed bundle, run where a person at the board would run it."""
    r = subprocess.run([sys.executable, "-m", "runtime", "verify", "bundles/" + name],
                       cwd=os.path.join(str(target), "current"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=120)
    assert r.returncode == 0 and "verify: PASSED" in r.stdout, r.stdout
    return True


@pytest.fixture(scope="module")
def deployed(sshd, host_bundle, tmp_path_factory):
    """One successful deploy with rsync (requirements checked, not installed): the others build on it."""
    target = tmp_path_factory.mktemp("board") / "dynn"
    r = deploy(sshd, host_bundle, target, "--no-install")
    return target, r


def test_deploy_with_rsync_makes_a_verified_live_release(deployed, host_bundle):
    target, r = deployed
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: PASSED" in r.stdout and "with rsync" in r.stdout
    assert "[6/7] python -m runtime doctor, then verify" in r.stdout and "WARNING" not in r.stdout  # doctor: exit 0
    assert os.path.islink(str(target / "current")) and re.match(r"^releases/\d{8}T\d{6}Z-\w{6}$", live(target))
    cur = target / "current"
    bundle = cur / "bundles" / "host-cpu"
    for rel in json.loads((bundle / "manifest.json").read_text())["files"]:
        assert sha(str(bundle / rel)) == sha(os.path.join(host_bundle, rel)), rel
    assert (cur / "runtime" / "__main__.py").is_file()
    assert (cur / "board_scripts" / "install_udev_rule.sh").is_file()
    assert (cur / "board_scripts" / "udev").is_dir()
    # host-side tools never reach a board
    for host_only in ("board_scripts/deploy.py", "board_scripts/deployment", "board_scripts/ansible", "compile",
                      "bench", "build.py"):
        assert not (cur / host_only).exists(), host_only
    assert staging_left(target) == []
    assert verifies_on_the_board(target)


def test_redeploys_keep_only_the_previous_release_and_delete_nothing_else(sshd, deployed, host_bundle):
    target, _ = deployed
    first = live(target)
    (target / "current" / "bundles" / "host-cpu" / "stale-file").write_text("from an older deploy")
    (target / "releases" / "my-notes").write_text("not the tool's")  # a name the tool never makes
    r = deploy(sshd, host_bundle, target, "--copy", "tar", "--skip-requirements")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "with tar" in r.stdout and "verify: PASSED" in r.stdout
    second = live(target)
    assert second != first
    assert not (target / "current" / "bundles" / "host-cpu" / "stale-file").exists()
    assert releases(target) == sorted([first.split("/")[1], second.split("/")[1]])
    r = deploy(sshd, host_bundle, target, "--skip-requirements")
    assert r.returncode == 0, r.stdout + r.stderr
    assert releases(target) == sorted([second.split("/")[1], live(target).split("/")[1]])
    assert "removed %s/%s" % (target, first) in r.stdout
    assert (target / "releases" / "my-notes").read_text() == "not the tool's"
    assert verifies_on_the_board(target)


def test_other_bundles_of_the_live_release_stay_deployed(sshd, deployed, host_bundle):
    target, _ = deployed
    r = deploy(sshd, host_bundle, target, "--skip-requirements", "--name", "second")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "keeping the live release's bundles host-cpu" in r.stdout
    assert verifies_on_the_board(target, "host-cpu") and verifies_on_the_board(target, "second")


def _tensorrt_bundle(src, dst):
    """host_bundle relabelled as a TensorRT target: deploy must run the on-board engine build for it."""
    shutil.copytree(src, dst)
    path = os.path.join(dst, "manifest.json")
    with open(path) as f:
        man = json.load(f)
    man["target"]["engine"] = "tensorrt"
    with open(path, "w") as f:
        json.dump(man, f, indent=2)
    return dst


# (step, ssh argument that selects its call, how it fails, extra deploy flags, exit status): each remote step
# in turn, as a failure on the board, a dropped connection or Ctrl-C.
FAILURES = [
    ("connect", "DYNN-DIR", "drop", (), EXIT_CONNECT),
    ("pip", "pip install", "exit1", ("--python", "%s -S" % sys.executable), EXIT_REQUIREMENTS),
    ("staging", ".staging-XXXXXX", "exit1", (), EXIT_COPY),
    ("rsync", "rsync --server", "drop", (), EXIT_COPY),
    ("tar", "tar -xf", "drop", ("--copy", "tar"), EXIT_CONNECT),
    ("udev", "install_udev_rule.sh", "exit1", ("--udev",), EXIT_UDEV),
    ("doctor", "runtime doctor", "drop", (), EXIT_CONNECT),
    ("verify", "runtime verify", "exit1", (), EXIT_VERIFY),
    ("verify", "runtime verify", "drop", (), EXIT_CONNECT),
    ("verify", "runtime verify", "sigint", (), 130),
    ("switch", "mv -T", "exit1", (), EXIT_COPY),
    ("switch", "mv -T", "drop", (), EXIT_CONNECT),
]


@pytest.mark.parametrize("fail_on,how,extra,code", [f[1:] for f in FAILURES], ids=["%s-%s" % (f[0], f[2])
                                                                                  for f in FAILURES])
def test_a_failed_remote_step_leaves_the_previous_deployment_live(sshd, deployed, host_bundle, fail_on, how,
                                                                  extra, code):
    target, _ = deployed
    before = live(target)
    r = deploy(sshd, host_bundle, target, *(("--skip-requirements",) if "--python" not in extra else ()) + extra,
               fail_on=fail_on, how=how)
    assert r.returncode == code, r.stdout + r.stderr
    assert live(target) == before
    assert staging_left(target) == []
    assert verifies_on_the_board(target)
    out = r.stdout + r.stderr
    if code == 130:
        assert last_line(r.stderr).startswith("interrupted; ")
        assert "interrupted: %s/current still points to %s" % (target, before) in r.stdout
        return
    line = last_line(r.stderr)
    assert line.startswith("error: %s@127.0.0.1:%d: " % (sshd["user"], sshd["port"])), out
    if fail_on not in ("DYNN-DIR", "pip install"):  # failures after staging name what is live, which exists
        assert line.endswith("%s/current still points to %s (the previous deployment, untouched)"
                             % (target, before)), line
        assert os.path.isdir(os.path.join(str(target), before))


def test_a_dropped_connection_after_the_switch_reports_the_new_release(sshd, deployed, host_bundle):
    target, _ = deployed
    before = live(target)
    r = deploy(sshd, host_bundle, target, "--skip-requirements", fail_on="mv -T", how="drop-after")
    assert r.returncode == EXIT_CONNECT, r.stdout + r.stderr
    now = live(target)
    assert now != before and "the switch had happened: %s/current -> %s is the new deployment" % (target, now) \
        in last_line(r.stderr)
    assert staging_left(target) == [] and verifies_on_the_board(target)


@pytest.mark.parametrize("fail_on", ["runtime verify", "mv -T"])
def test_a_connection_that_stays_down_names_the_staging_release_left_behind(sshd, deployed, host_bundle, fail_on):
    target, _ = deployed
    before = live(target)
    r = deploy(sshd, host_bundle, target, "--skip-requirements", fail_on=fail_on, how="drop-rest")
    assert r.returncode == EXIT_CONNECT, r.stdout + r.stderr
    line = last_line(r.stderr)
    m = re.search(r"; (\S+) may be left on the board", line)
    assert m and os.path.isdir(m.group(1)), line
    if fail_on == "mv -T":  # the tool cannot know whether the switch ran: it names both, each complete
        assert re.search(r"/current is either %s or releases/\S+ \(the switch may have run\)" % before, line), line
    else:
        assert "%s/current still points to %s" % (target, before) in line, line
    assert live(target) == before and verifies_on_the_board(target)
    shutil.rmtree(m.group(1))  # what the message says is safe


def test_failed_engine_build_exits_6_and_keeps_the_previous_deployment(sshd, deployed, host_bundle, tmp_path):
    target, _ = deployed
    before = live(target)
    trt = _tensorrt_bundle(host_bundle, str(tmp_path / "host-cpu"))
    r = deploy(sshd, trt, target, "--skip-requirements")  # no TensorRT here: the real trt-build fails
    assert r.returncode == EXIT_TRT, r.stdout + r.stderr
    assert "`python -m runtime trt-build` failed for bundle host-cpu" in last_line(r.stderr)
    assert live(target) == before and staging_left(target) == [] and verifies_on_the_board(target)


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
    before = live(target)
    bad = _tampered_bundle(host_bundle, str(tmp_path / "host-cpu"))
    r = deploy(sshd, bad, target, "--skip-requirements")
    assert r.returncode == EXIT_VERIFY, r.stdout + r.stderr
    assert "MISMATCH" in r.stdout and "verify: FAILED" in r.stdout
    assert "verify` FAILED for bundle host-cpu" in last_line(r.stderr)
    assert live(target) == before and staging_left(target) == [] and verifies_on_the_board(target)


def test_failed_connection_exits_3_with_one_clear_line(sshd, host_bundle, tmp_path):
    port = _free_port()  # nothing listens there
    t = time.time()
    r = deploy(sshd, host_bundle, tmp_path / "never", port=port)
    assert r.returncode == EXIT_CONNECT, r.stdout + r.stderr
    line = last_line(r.stderr)
    assert line.startswith("error: %s@127.0.0.1:%d: ssh failed while connecting" % (sshd["user"], port)), line
    assert "refused" in line.lower(), line
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert time.time() - t < 30
    assert not (tmp_path / "never").exists()


def test_missing_requirement_exits_5_with_the_pip_command(sshd, host_bundle, tmp_path):
    # `python -S` has no site-packages: no numpy, no TFLite binding, as on a fresh board
    r = deploy(sshd, host_bundle, tmp_path / "bare", "--no-install", "--python", "%s -S" % sys.executable)
    assert r.returncode == EXIT_REQUIREMENTS, r.stdout + r.stderr
    line = last_line(r.stderr)
    assert "target host-cpu needs numpy>=1.16" in line and "-m pip install" in line, line
    assert "-m pip install --user ai-edge-litert" in line and "(or deploy without --no-install)" in line, line
    assert not (tmp_path / "bare" / "current").exists() and not (tmp_path / "bare" / "releases").exists()


PY36 = next((p for p in ["/usr/bin/python3.6", os.path.expanduser("~/.pyenv/versions/3.6.15/bin/python3.6")]
             if os.path.exists(p)), None)  # real interpreters, not pyenv shims (they need pyenv's environment)


@pytest.mark.skipif(PY36 is None, reason="no python3.6 interpreter here")
def test_too_old_python_exits_5_naming_the_version(sshd, host_bundle, tmp_path):
    r = deploy(sshd, host_bundle, tmp_path / "old", "--python", PY36)
    assert r.returncode == EXIT_REQUIREMENTS, r.stdout + r.stderr
    line = last_line(r.stderr)
    assert "target host-cpu needs Python 3.8+" in line and "3.6." in line and "--python" in line, line


def test_bundle_built_before_board_requirements_is_refused_on_the_host(host_bundle, tmp_path):
    old = str(tmp_path / "host-cpu")
    shutil.copytree(host_bundle, old)
    path = os.path.join(old, "manifest.json")
    man = json.loads(open(path).read())
    del man["target"]["board_requirements"]
    with open(path, "w") as f:
        json.dump(man, f)
    r = subprocess.run([sys.executable, DEPLOY, old, "--host", "127.0.0.1", "--port", str(_free_port())],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert r.returncode == EXIT_USAGE and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.strip() == ("error: %s was built before targets declared their board requirements (no "
                                "target.board_requirements): rebuild the bundle (python build.py --target "
                                "host-cpu)" % path)


@pytest.mark.parametrize("flag,value", [("--host", "-oProxyCommand=touch {x}"), ("--user", "-oProxyCommand=touch {x}"),
                                        ("--host", "board;touch {x}"), ("--host", "$(touch {x})"),
                                        ("--user", "me touch {x}")])
def test_host_or_user_that_is_not_a_plain_name_is_refused_before_ssh(host_bundle, tmp_path, flag, value):
    marker = str(tmp_path / "ran")
    args = {"--host": "127.0.0.1", "--user": "me"}
    args[flag] = value.format(x=marker)
    r = subprocess.run([sys.executable, DEPLOY, host_bundle, "--host=" + args["--host"], "--user=" + args["--user"],
                        "--dir", str(tmp_path / "d")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=60)
    assert r.returncode == EXIT_USAGE, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: %s %r is not a " % (flag, args[flag])), r.stderr
    assert not os.path.exists(marker)


def test_every_ssh_and_rsync_call_ends_options_before_the_destination():
    b = Board("nano-01", "jetson", 2222, options=["StrictHostKeyChecking=no"])
    argv = b.argv("true")
    assert argv[argv.index("--") + 1] == "jetson@nano-01" and argv.index("--") > argv.index("-p")
    r = b.rsync_argv(["-rlpt"], ["/src/a"], "/dst/")
    assert r[r.index("--") + 1:] == ["/src/a", "jetson@nano-01:/dst/"]
    assert Board("fe80::1", None).rsync_argv([], ["a"], "/d")[-1] == "[fe80::1]:/d"
    for host in ("nano.local", "192.168.1.41", "fe80::1", "xu3-01"):
        check_destination(host, "odroid")
    for host, user in (("-x", None), ("a b", None), ("a/b", None), ("", None), ("ok", "-l"), ("ok", "a@b")):
        with pytest.raises(DeployError):
            check_destination(host, user)


def _reqs(target_name):
    target = next(t for t in list_targets() if t["name"] == target_name)
    return target, needs.read_requirements({"target": target}, "%s.json" % target_name)


def _found(**versions):
    return {m.replace("__", "."): ({"version": v} if v else {"error": "ModuleNotFoundError"})
            for m, v in versions.items()}


def test_every_target_declares_board_requirements_that_parse():
    for t in list_targets():
        reqs = needs.read_requirements({"target": t}, t["name"])
        assert any(r["import"] == "numpy" for r in reqs), t["name"]


def test_tflite_ranges_of_the_boards_are_checked_with_packaging_specifiers():
    _, xu3 = _reqs("xu3")
    ok = _found(numpy="1.17.4", tflite_runtime__interpreter="2.13.0")
    assert needs.missing(xu3, ok) == []
    too_new = needs.missing(xu3, _found(numpy="1.17.4", tflite_runtime__interpreter="2.14.0"))
    assert [why for _, why in too_new] == ["found tflite_runtime.interpreter 2.14.0, outside <=2.13,>=2.7"]
    assert needs.missing(xu3, _found(numpy="1.17.4", tflite_runtime__interpreter="2.5.0"))
    _, nano_cpu = _reqs("nano-cpu")
    assert needs.missing(nano_cpu, _found(numpy="1.19.5", tflite_runtime__interpreter="2.14.0")) == []
    # ai-edge-litert meets the TFLite requirement of the Nano CPU instead of tflite-runtime
    assert needs.missing(nano_cpu, _found(numpy="1.24.4", tflite_runtime__interpreter=None,
                                          ai_edge_litert__interpreter="1.2.0")) == []


def test_pycuda_is_compiled_with_cuda_on_path_and_tensorrt_is_never_pip_installed():
    target, reqs = _reqs("nano-gpu")
    info = {"venv": False, "python": [3, 6, 9], "executable": "/usr/bin/python3"}
    gaps = needs.missing(reqs, _found(numpy="1.13.3", tensorrt="8.2.1.8", pycuda__driver=None))
    assert [r["import"] for r, _ in gaps] == ["pycuda.driver"]
    assert needs.pip_command("/usr/bin/python3", info, gaps[0][0]) == \
        "PATH=/usr/local/cuda/bin:\"$PATH\" /usr/bin/python3 -m pip install --user pycuda==2022.1"
    err = needs.refuse("jetson@nano:22", target, needs.missing(reqs, _found(numpy="1.13.3", tensorrt=None,
                                                                             pycuda__driver="2022.1")),
                       "/usr/bin/python3", info, True)
    assert "python3-libnvinfer" in str(err) and "pip install" not in str(err) and err.exit_code == EXIT_REQUIREMENTS
    err = needs.refuse("jetson@nano:22", target, gaps, "/usr/bin/python3", info, False)
    assert "pip install --user pycuda==2022.1` (or deploy without --no-install); pycuda 2022.1" in str(err)
    assert "nvcc" in str(err) and "python3-dev" in str(err) and "cuda-python needs CUDA 11.2+" in str(err)


def test_ansible_playbook_passes_its_syntax_check():
    assert os.path.exists(ANSIBLE_PLAYBOOK), "ansible-core (requirements.txt) is missing from the venv"
    d = os.path.join(ROOT, "board_scripts", "ansible")
    r = subprocess.run([ANSIBLE_PLAYBOOK, "--syntax-check", "-i", os.path.join(d, "inventory.example.ini"),
                        os.path.join(d, "deploy.yml")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=120)
    assert r.returncode == 0, r.stdout


def test_ansible_playbook_deploys_through_deploy_py(sshd, host_bundle, tmp_path):
    """The playbook is a fleet front end to the one procedure: a loopback board ends up with a live release."""
    target = tmp_path / "fleet" / "dynn"
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("\n".join([
        "[boards]",
        "loopback ansible_host=127.0.0.1 ansible_port=%d ansible_user=%s ansible_ssh_private_key_file=%s"
        % (sshd["port"], sshd["user"], sshd["key"]),
        "[boards:vars]",
        "dynn_bundle=%s" % host_bundle, "dynn_dir=%s" % target, "dynn_python=%s" % sys.executable,
        "dynn_deploy_args=['--skip-requirements', '--ssh-option', 'StrictHostKeyChecking=no', '--ssh-option', "
        "'UserKnownHostsFile=/dev/null', '--ssh-option', 'LogLevel=ERROR']", ""]))
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
               ANSIBLE_NOCOLOR="1")
    r = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inventory), os.path.join(ROOT, "board_scripts", "ansible",
                                                                              "deploy.yml")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=300,
                       env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout
    assert "verify: PASSED" in r.stdout
    assert verifies_on_the_board(target)


def test_a_current_that_is_not_the_tools_symlink_is_refused_and_left_alone(sshd, host_bundle, tmp_path):
    target = tmp_path / "theirs"
    (target / "current").mkdir(parents=True)
    (target / "current" / "data").write_text("someone else's")
    r = deploy(sshd, host_bundle, target, "--skip-requirements")
    assert r.returncode == EXIT_COPY, r.stdout + r.stderr
    assert last_line(r.stderr).endswith("%s/current exists and is not the symlink this tool makes: move it away or "
                                        "deploy to another --dir" % target), r.stderr
    assert sorted(os.listdir(str(target))) == ["current"]
    assert (target / "current" / "data").read_text() == "someone else's"


@pytest.mark.parametrize("entry,field", [
    ({"import": "numpy", "pip": "numpy>>1"}, ".pip is not a valid PEP 508 requirement"),
    ({"import": "os; rm -rf /"}, "import"),
    ({"import": "numpy", "version": "=>2"}, ".version is not a valid version range"),
    ({"import": "pycuda", "pip": "pycuda", "pip_path_prepend": ["relative/bin"]}, "pip_path_prepend"),
    ("numpy", "board_requirements[0]"),
])
def test_a_bad_board_requirement_in_a_manifest_is_one_line_naming_the_field(entry, field):
    with pytest.raises(DeployError) as e:
        needs.read_requirements({"target": {"name": "xu3", "board_requirements": [entry]}}, "b/manifest.json")
    msg = str(e.value)
    assert msg.startswith("b/manifest.json: target.board_requirements[0]") and field in msg, msg
    assert "rebuild the bundle (python build.py --target xu3)" in msg and "\n" not in msg


def test_a_host_python_without_numpy_or_packaging_gets_one_line_naming_the_venv():
    # -S: no site-packages, so runtime/ (numpy) and the version ranges (packaging) cannot import
    r = subprocess.run([sys.executable, "-S", "-m", "board_scripts.deployment", "x", "--host", "h"], cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert r.returncode == EXIT_USAGE and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: this Python (%s) cannot run deploy: No module "
                                                             "named " % sys.executable), r.stderr
    assert ".venv/bin/python board_scripts/deploy.py" in r.stderr


def test_staging_left_by_a_dropped_connection_is_removed_after_a_day_and_not_before(sshd, deployed, host_bundle):
    target, _ = deployed
    old, fresh = target / "releases" / ".staging-OLDone", target / "releases" / ".staging-NEWone"
    for d in (old, fresh):
        (d / "runtime").mkdir(parents=True)
    two_days_ago = time.time() - 2 * 86400
    os.utime(str(old), (two_days_ago, two_days_ago))
    r = deploy(sshd, host_bundle, target, "--skip-requirements")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not old.exists() and "removed %s/releases/.staging-OLDone" % target in r.stdout
    assert fresh.is_dir()  # may be another deploy's, still running
    shutil.rmtree(str(fresh))
