"""The layout on the board and the shell scripts that change it (docs/deploy.md, "On the board").

  DIR/current -> releases/<id>        the live deployment: a symlink, replaced in one rename (mv -T)
  DIR/releases/<id>/                  runtime/, board_scripts/, bundles/<name>/ (one complete release each)
  DIR/releases/.staging-XXXXXX/       a release being copied, built and verified; never live

A release is staged next to the live one, verified there, renamed to releases/<id> and only then made live
by replacing the `current` symlink with one rename, so a deploy that fails at any point (a step, the
connection, Ctrl-C) leaves `current` on the previous release (issue 10). Releases other than the live one
and the one before it are pruned; only names this tool makes (<UTC time>-<6 characters>) are ever deleted.
"""
import shlex
import time

from .errors import DeployError, EXIT_COPY

STAGING_PREFIX = ".staging-"
# The shell glob of the release names made by release_id(); pruning deletes only names that match it.
RELEASE_GLOB = "[0-9]" * 8 + "T" + "[0-9]" * 6 + "Z-??????"
STALE_STAGING_DAYS = 1  # staging left by a dropped connection; older than any deploy can take


def release_id(staging):
    """<UTC time>-<the staging directory's random suffix>: sortable, and unique like the suffix."""
    return "%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), staging.rsplit("-", 1)[1])


def probe_layout(remote_dir, bundle_name):
    """Shell lines that create DIR and report its absolute path, the live release and what it holds."""
    return [
        "d=%s" % shlex.quote(remote_dir),
        'mkdir -p -- "$d" && cd -- "$d" || { echo "DYNN-DIR-ERROR"; exit 0; }',
        'echo "DYNN-DIR $(pwd -P)"',
        'if [ -L current ]; then echo "DYNN-CURRENT $(readlink current)"; '
        'elif [ -e current ]; then echo "DYNN-CURRENT-FOREIGN"; fi',
        "[ -d current/bundles/%s ] && echo DYNN-HAS-BUNDLE" % shlex.quote(bundle_name),
        # the layout of deploys before releases: left alone, named in the final message
        'for p in runtime board_scripts bundles; do [ -d "$p" ] && [ ! -L "$p" ] && echo "DYNN-OLD $p"; done',
    ]


def stage_script(remote_dir, bundle_name):
    """Create the staging release and copy into it the live release's other bundles (they stay deployed)."""
    return "\n".join([
        "cd -- %s || exit 1" % shlex.quote(remote_dir),
        'mkdir -p releases && s=$(mktemp -d "$(pwd -P)/releases/%sXXXXXX") || exit 1' % STAGING_PREFIX,
        'mkdir -p "$s/bundles" || { rm -rf -- "$s"; exit 1; }',
        "if [ -d current/bundles ]; then for b in current/bundles/*; do",
        '  [ -d "$b" ] && [ "${b##*/}" != %s ] || continue' % shlex.quote(bundle_name),
        '  cp -a -- "$b" "$s/bundles/" && echo "DYNN-KEPT ${b##*/}" || { rm -rf -- "$s"; exit 1; }',
        "done; fi",
        'echo "DYNN-STAGING $s"',
    ])


def parse_staging(proc, board, remote_dir, previous):
    staging, kept = None, []
    for line in (proc.stdout or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "DYNN-STAGING":
            staging = value
        elif key == "DYNN-KEPT":
            kept.append(value)
    if proc.returncode != 0 or not staging:
        raise DeployError("%s: cannot create a staging release in %s/releases (%s): check free space and "
                          "permissions there; %s" % (board.where, remote_dir, (proc.stderr or "").strip()
                                                     or "exit %d" % proc.returncode,
                                                     live_note(remote_dir, previous)), EXIT_COPY)
    return staging, kept


def switch_script(remote_dir, staging, rid):
    """Rename the verified staging release to releases/<id>, then make it live with one rename."""
    return "\n".join([
        "cd -- %s || exit 1" % shlex.quote(remote_dir),
        "s=%s; r=releases/%s; t=.current-%s" % (shlex.quote(staging), rid, rid),
        '[ -e "$r" ] && { echo "$r exists already" >&2; exit 1; }',
        'mv -T -- "$s" "$r" || exit 1',
        'ln -s -- "$r" "$t" || { mv -T -- "$r" "$s"; exit 1; }',
        'mv -T -- "$t" current || { rm -f -- "$t"; mv -T -- "$r" "$s"; exit 1; }',
        "echo DYNN-SWITCHED",
    ])


def cleanup_script(remote_dir, staging, rid):
    """After a failure: remove what this deploy made unless it went live; report what is live."""
    return "\n".join([
        "cd -- %s || exit 1" % shlex.quote(remote_dir),
        "rm -rf -- %s; rm -f -- .current-%s" % (shlex.quote(staging), rid),
        '[ "$(readlink current)" = releases/%s ] || rm -rf -- releases/%s' % (rid, rid),
        'echo "DYNN-CURRENT $(readlink current)"',
    ])


def prune_script(remote_dir, keep):
    """Delete our releases other than the live one and `keep`; and staging left over by dropped connections."""
    names = " ".join(shlex.quote(k) for k in keep)
    return "\n".join([
        "cd -- %s/releases || exit 0" % shlex.quote(remote_dir),
        'live=$(readlink ../current); live=${live#releases/}',
        "for r in %s; do" % RELEASE_GLOB,
        '  [ -d "$r" ] && [ ! -L "$r" ] || continue',
        '  case " $live %s " in *" $r "*) continue;; esac' % names,
        '  rm -rf -- "$r" && echo "DYNN-PRUNED releases/$r"',
        "done",
        "find . -maxdepth 1 -type d -name '%s??????' -mtime +%d -exec sh -c "
        "'rm -rf -- \"$1\" && echo \"DYNN-PRUNED releases/${1#./}\"' sh {} \\;" % (STAGING_PREFIX, STALE_STAGING_DAYS - 1),
    ])


def live_note(remote_dir, current):
    """What a failed deploy leaves live, naming paths that exist."""
    if current:
        return "%s/current still points to %s (the previous deployment, untouched)" % (remote_dir, current)
    return "nothing was deployed in %s (it had no deployment before)" % remote_dir
