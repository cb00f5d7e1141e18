"""The deploy procedure: the one implementation of the steps (the Ansible playbook runs this per board)."""
import os
import re
import shutil

from runtime.bundle import read_manifest, verify_files
from runtime.errors import RuntimeUserError

from . import copy, needs, release, steps
from .errors import DeployError, EXIT_COPY, EXIT_USAGE
from .ssh import Board, check_destination

REMOTE_DIR_CHARS = re.compile(r"^[A-Za-z0-9._/+~-]+$")
BUNDLE_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$")
log = steps.log


def read_bundle(bundle):
    """The manifest of `bundle` and its board requirements, after checking every file's sha256 here."""
    try:
        manifest = read_manifest(bundle)
        verify_files(bundle, manifest)
    except RuntimeUserError as exc:
        raise DeployError("on this host, before copying: %s" % exc, EXIT_USAGE)
    reqs = needs.read_requirements(manifest, os.path.join(bundle, "manifest.json"))
    return manifest, reqs


def check_arguments(args, name):
    check_destination(args.host, args.user)
    if not REMOTE_DIR_CHARS.match(args.dir) or args.dir.startswith("-"):
        raise DeployError("--dir %r has characters this tool does not pass to a remote shell: use letters, digits "
                          "and . _ - + / ~ (not starting with -)" % args.dir)
    if not BUNDLE_NAME.match(name) or name in (".", ".."):
        raise DeployError("bundle name %r has characters this tool does not pass to a remote shell: use letters, "
                          "digits and . _ - + (or pass --name)" % name)
    if args.identity and not os.path.isfile(args.identity):
        raise DeployError("the ssh key %s does not exist: pass the private key file to --identity" % args.identity)
    if shutil.which("ssh") is None:
        raise DeployError("no ssh client on this host: install openssh-client")


def choose_copy(board, args, found):
    here = shutil.which("rsync") is not None
    if args.copy == "rsync" and not (found["rsync"] and here):
        raise DeployError("%s: --copy rsync, but rsync is missing %s: install it or use --copy tar"
                          % (board.where, "on the board" if not found["rsync"] else "on this host"), EXIT_COPY)
    use_rsync = args.copy == "rsync" or (args.copy == "auto" and found["rsync"] and here)
    if not use_rsync and not found["tar"]:
        raise DeployError("%s: the board has neither rsync nor tar: sudo apt-get install rsync" % board.where,
                          EXIT_COPY)
    return use_rsync


def deploy(args):
    bundle = os.path.abspath(args.bundle)
    name = args.name or os.path.basename(bundle.rstrip("/"))
    check_arguments(args, name)
    manifest, reqs = read_bundle(bundle)
    target = manifest["target"]
    board = Board(args.host, args.user, args.port, args.identity, args.ssh_option, args.connect_timeout)
    remote_dir = args.dir[2:] if args.dir.startswith("~/") else args.dir
    modules = needs.modules_to_probe(reqs)

    log("[1/7] connecting to %s" % board.where)
    found = steps.probe(board, remote_dir, args.python, name, modules)
    remote_dir, info = found["dir"], found["python"]
    if not REMOTE_DIR_CHARS.match(remote_dir):
        raise DeployError("%s: the directory resolves to %r, which has characters this tool does not pass to a "
                          "remote shell: pick another --dir" % (board.where, remote_dir))
    log("%s: %s, Python %s, directory %s, live release %s" % (
        board.where, info["machine"], ".".join(map(str, info["python"])), remote_dir, found["current"] or "none"))

    log("[2/7] requirements of target %s (%s)" % (target["name"], target["engine"]))
    if args.skip_requirements:
        log("skipped (--skip-requirements)")
    else:
        steps.requirements(board, args.python, target, reqs, info, not args.no_install, modules)
    use_rsync = choose_copy(board, args, found)

    try:
        proc = board.run(release.stage_script(remote_dir, name), "creating the staging release", capture=True)
    except DeployError as exc:  # a staging directory made before the drop is pruned by a later deploy
        raise DeployError("%s; %s" % (exc, release.live_note(remote_dir, found["current"])), exc.exit_code)
    staging, kept = release.parse_staging(proc, board, remote_dir, found["current"])
    rid = release.release_id(staging)
    switching = False
    try:
        log("[3/7] copying runtime/, board_scripts/ and %s with %s into %s%s" % (
            name, "rsync" if use_rsync else "tar", staging,
            "; keeping the live release's bundles %s" % ", ".join(kept) if kept else ""))
        if use_rsync:
            copy.copy_rsync(board, bundle, name, staging, remote_dir, found["current"] is not None, found["bundle"])
        else:
            copy.copy_tar(board, bundle, name, staging)
        log("[4/7] udev rule: %s" % ("installing" if args.udev else "skipped (no --udev)"))
        if args.udev:
            steps.install_udev(board, staging)
        log("[5/7] TensorRT engine: %s" % ("building" if target["engine"] == "tensorrt" else "not needed"))
        if target["engine"] == "tensorrt":
            steps.build_engine(board, args.python, staging, name, args.trt_mode)
        log("[6/7] python -m runtime doctor, then verify")
        steps.doctor(board, args.python, staging, name)
        steps.verify(board, args.python, staging, name, target["name"])
        log("[7/7] switching %s/current to releases/%s" % (remote_dir, rid))
        switching = True
        switched = board.run(release.switch_script(remote_dir, staging, rid), "switching to the new release",
                             capture=True)
        if "DYNN-SWITCHED" not in switched.stdout:
            raise board.failure("switching %s/current to the new release" % remote_dir, switched,
                                "check free space and permissions in %s" % remote_dir, EXIT_COPY)
    except DeployError as exc:
        raise DeployError("%s; %s" % (exc, roll_back(board, remote_dir, staging, rid, found["current"],
                                                        switching)), exc.exit_code)
    except BaseException as exc:  # Ctrl-C, or a bug: the board is still put back before the traceback
        log("%s: %s" % ("interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped",
                        roll_back(board, remote_dir, staging, rid, found["current"], switching)))
        raise
    prune(board, remote_dir, rid, found["current"])
    log("%s: bundle %s deployed and verified: %s/current -> releases/%s; on the board: cd %s/current && %s -m "
        "runtime info bundles/%s" % (board.where, name, remote_dir, rid, remote_dir, args.python, name))
    if found["old"]:
        log("note: %s from an earlier deploy layout are no longer used; delete them when you no longer need "
            "them" % ", ".join("%s/%s" % (remote_dir, p) for p in found["old"]))
    return 0


def roll_back(board, remote_dir, staging, rid, previous, switching):
    """Remove this deploy's staging and release unless it went live; say what is live now (as the board says)."""
    try:
        proc = board.run(release.cleanup_script(remote_dir, staging, rid), "cleaning up", capture=True)
    except DeployError:
        live = release.live_note(remote_dir, previous) if not switching else (
            "%s/current is either %s or releases/%s (the switch may have run), each a complete release"
            % (remote_dir, previous or "absent", rid))
        return "%s; %s may be left on the board (the connection is gone; it is safe to delete)" % (live, staging)
    live = [l.split(" ", 1)[1] if " " in l else "" for l in proc.stdout.splitlines() if l.startswith("DYNN-CURRENT")]
    if live and live[-1] == "releases/" + rid:
        return "the switch had happened: %s/current -> releases/%s is the new deployment" % (remote_dir, rid)
    return release.live_note(remote_dir, (live[-1] or None) if live else previous)


def prune(board, remote_dir, rid, previous):
    keep = [rid] + ([previous.split("/", 1)[1]] if previous and previous.startswith("releases/") else [])
    try:
        proc = board.run(release.prune_script(remote_dir, keep), "removing old releases", capture=True)
    except DeployError as exc:
        log("WARNING: could not remove old releases (%s); the new release is live" % exc)
        return
    for line in proc.stdout.splitlines():
        if line.startswith("DYNN-PRUNED"):
            log("removed %s/%s" % (remote_dir, line.split(" ", 1)[1]))
