"""python -m board_scripts.deployment: the same as python3 board_scripts/deploy.py."""
import sys

from .cli import main

sys.exit(main())
