"""The deploy command line: python3 board_scripts/deploy.py BUNDLE --host HOST ... (docs/deploy.md)."""
import argparse
import sys

from runtime.cli import run_cli

from . import __doc__ as USAGE
from .procedure import deploy


def build_parser():
    p = argparse.ArgumentParser(prog="deploy.py", description=USAGE.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(USAGE.split("\n\n", 2)[2:]))
    p.add_argument("bundle", metavar="BUNDLE_DIR", help="bundle directory on this host (holds manifest.json)")
    p.add_argument("--host", required=True, help="board host name or address")
    p.add_argument("--user", default=None, help="ssh user (default: ssh's own choice)")
    p.add_argument("--dir", default="dynn", help="remote directory, relative to the user's home unless absolute "
                                                 "(default: dynn)")
    p.add_argument("--port", type=int, default=None, help="ssh port (default 22)")
    p.add_argument("--identity", default=None, metavar="KEY", help="ssh private key file")
    p.add_argument("--python", default="python3", help="the board's Python command (default python3; nano-gpu "
                                                       "needs the system python3 with JetPack's TensorRT)")
    p.add_argument("--name", default=None, help="name under DIR/current/bundles (default: the bundle directory's "
                                                "name)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-install", action="store_true",
                   help="check the board's requirements but install nothing (fail with the pip command instead)")
    g.add_argument("--skip-requirements", action="store_true",
                   help="neither check nor install requirements (verify will tell)")
    p.add_argument("--udev", action="store_true",
                   help="install the udev rule for sysfs clock permissions (root on the board: sudo)")
    p.add_argument("--trt-mode", default=None, metavar="MODE",
                   help="nano-gpu engine mode, passed to `python -m runtime trt-build --mode` (default: its own)")
    p.add_argument("--copy", choices=("auto", "rsync", "tar"), default="auto",
                   help="auto: rsync when both sides have it, else tar over ssh")
    p.add_argument("--ssh-option", action="append", default=[], metavar="OPTION",
                   help="extra ssh -o option, repeatable (e.g. StrictHostKeyChecking=accept-new)")
    p.add_argument("--connect-timeout", type=int, default=10, metavar="S", help="ssh ConnectTimeout (default 10)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(deploy, args, resume_hint="DIR/current on the board is always one complete release (the "
                                             "line above names it when known); deploy again to finish")


if __name__ == "__main__":
    sys.exit(main())
