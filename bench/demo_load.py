"""The demo's CPU load: a separate process group of busy processes that stops by itself at its deadline."""
import os
import signal
import subprocess
import sys

# The load generator: N busy processes (this one and N-1 forks), each stops at its own deadline.
LOADGEN = r"""
import os, sys, time
end = time.time() + float(sys.argv[1])
n = int(sys.argv[2])
kids, child = [], False
for _ in range(n - 1):
    pid = os.fork()
    if pid == 0:
        child, kids = True, []
        break
    kids.append(pid)
x = 0
while time.time() < end:
    for _ in range(20000):
        x += 1
if child:
    os._exit(0)
for pid in kids:
    os.waitpid(pid, 0)
"""


class LoadGenerator(object):
    """A separate process group that loads every CPU for `duration_s` and exits by itself.

    It stays in the demo's session on purpose: with the kernel's autogroup scheduling (a group per
    session), a new session would get its own share of the CPUs and hardly slow the demo down, however
    many processes it runs. In the same session it competes like a second application of the same user."""

    def __init__(self, duration_s, workers):
        self.duration_s, self.workers = float(duration_s), int(workers)
        self.proc = None
        self.pgid = None

    def start(self):
        cmd = [sys.executable, "-c", LOADGEN, "%.3f" % self.duration_s, str(self.workers)]
        if sys.version_info >= (3, 11):
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, process_group=0)
        else:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=os.setpgrp)
        self.pgid = self.proc.pid  # its own process group (id = the leader's pid); the forks share it
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Kill what is left of the group (nothing, when it ended by itself) and reap the leader."""
        if self.proc is None:
            return
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
