#!/usr/bin/env python3
"""Deploy a bundle to one board: python3 board_scripts/deploy.py BUNDLE --host HOST ... (--help for more).

A thin entry point: it runs the package board_scripts.deployment (python -m board_scripts.deployment from
the repository root does the same) with the repository root on PYTHONPATH, so that the package and the
runtime/ it uses import as modules of this repository wherever this file is started from.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    os.execve(sys.executable, [sys.executable, "-m", "board_scripts.deployment"] + sys.argv[1:], env)
