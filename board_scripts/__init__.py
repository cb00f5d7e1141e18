"""What a person runs to deploy to and work on boards.

Host side (never copied to a board): deploy.py and deployment/ (the one deploy procedure), ansible/ (runs
that procedure for a fleet). Board side (copied with runtime/): install_udev_rule.sh, udev/.
"""
