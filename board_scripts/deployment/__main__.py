"""python -m board_scripts.deployment: the same as python3 board_scripts/deploy.py."""
import sys

try:
    from .cli import main
except ImportError as exc:  # the host Python lacks numpy or packaging (runtime/, the version ranges)
    print("error: this Python (%s) cannot run deploy: %s; use the project's environment: make venv, then "
          ".venv/bin/python board_scripts/deploy.py ..." % (sys.executable, exc), file=sys.stderr)
    sys.exit(2)

sys.exit(main())
