"""One board reached over ssh: the only place that builds ssh and rsync command lines.

Host and user are checked against strict patterns before anything runs, and every ssh call puts `--`
before the destination, so that no value given on the command line can reach ssh as an option (issue 10:
`--host=-oProxyCommand=...` ran a command on the host).
"""
import re
import shlex
import subprocess

from .errors import DeployError, EXIT_CONNECT, EXIT_USAGE

# Host names (RFC 1123 labels), IPv4, or an IPv6 literal; always starting with a letter or digit.
HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                  r"[A-Za-z0-9])?)*\.?$|^[0-9A-Fa-f]*:[0-9A-Fa-f:.]+$")
# POSIX portable user names (useradd's default rule), up to 32 characters.
USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


def check_destination(host, user):
    """Refuse, with one line, a host or user that is not a plain name (or starts with `-`)."""
    if not host or len(host) > 253 or not HOST.match(host):
        raise DeployError("--host %r is not a host name or IP address (letters, digits, dots and dashes, "
                          "starting with a letter or digit): pass the board's name or address" % host, EXIT_USAGE)
    if user is not None and not USER.match(user):
        raise DeployError("--user %r is not a user name (a letter or _, then letters, digits, . _ -; at most 32): "
                          "pass the board's login name" % user, EXIT_USAGE)


def where(host, user, port):
    """USER@HOST:PORT, the prefix of every message about this board."""
    return "%s%s:%s" % ("%s@" % user if user else "", host, port or 22)


def _last_line(text):
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return lines[-1] if lines else ""


class Board(object):
    """Runs shell scripts on the board under `sh -c`, whatever the login shell is."""

    def __init__(self, host, user=None, port=None, identity=None, options=(), connect_timeout=10):
        check_destination(host, user)
        self.host, self.user, self.port = host, user, port
        self.dest = "%s@%s" % (user, host) if user else host
        self.where = where(host, user, port)
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
        return ["ssh"] + self.ssh_opts + (["-t"] if tty else []) + ["--", self.dest, "sh -c %s" % shlex.quote(script)]

    def rsync_argv(self, options, sources, remote_path):
        """rsync over this board's ssh; `--` ends the options before the sources and the destination."""
        host = "[%s]" % self.host if ":" in self.host else self.host  # rsync's syntax for IPv6 literals
        dest = "%s%s:%s" % ("%s@" % self.user if self.user else "", host, remote_path)
        rsh = " ".join(shlex.quote(a) for a in ["ssh"] + self.ssh_opts)
        return ["rsync", "-e", rsh] + list(options) + ["--"] + list(sources) + [dest]

    def run(self, script, what, capture=False, stdin=None, tty=False):
        """Run `script` on the board; ssh's own failure (exit 255) raises the connection error."""
        kw = {"stdin": subprocess.DEVNULL if stdin is None and not tty else stdin}
        if capture:
            kw.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        proc = subprocess.run(self.argv(script, tty), **kw)
        if proc.returncode == 255:
            raise self.connection_error(what, proc.stderr if capture else "")
        return proc

    def connection_error(self, what, stderr=""):
        why = _last_line(stderr)
        return DeployError("%s: ssh failed while %s%s: check that the board is on and reachable, that sshd runs "
                           "and that the key is authorized (ssh -p %s -- %s true)"
                           % (self.where, what, " (%s)" % why if why else "", self.port or 22, self.dest),
                           EXIT_CONNECT)

    def failure(self, what, proc, fix, code):
        """The one-line error for a remote step that ran and failed (its output is above, or in stderr)."""
        why = _last_line(proc.stderr) if isinstance(proc.stderr, str) else ""
        return DeployError("%s: %s failed (%s): %s" % (self.where, what, why or "exit %d, output above"
                                                      % proc.returncode, fix), code)


def quote_python(python):
    """--python as shell words: the command may carry options (`python3 -S`)."""
    return " ".join(shlex.quote(w) for w in shlex.split(python))
