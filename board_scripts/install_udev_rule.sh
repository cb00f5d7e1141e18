#!/bin/sh
# Let group "dynn" change CPU/GPU clocks and read the power sensors without sudo (files declared in
# runtime/boards/*.json): a udev rule per device event, a boot-time unit, one script that does the work.
# usage: sudo sh board_scripts/install_udev_rule.sh [USER]      USER defaults to $SUDO_USER
#        then log out and in again (or `newgrp dynn`) so the group membership takes effect;
#        `python -m runtime doctor` then shows every declared file as writable.
# Undo:  sudo systemctl disable dynn-permissions.service; sudo rm /etc/udev/rules.d/99-dynn-dvfs.rules
#        /etc/systemd/system/dynn-permissions.service /usr/local/lib/dynn/dynn-permissions.sh (and reboot)
if [ "$(id -u)" != 0 ]; then
    echo "install_udev_rule.sh: must run as root: sudo sh $0 [user]" >&2
    exit 1
fi
HERE=$(cd "$(dirname "$0")" && pwd)
USER_NAME=${1:-${SUDO_USER:-}}

getent group dynn >/dev/null || groupadd --system dynn || exit 1
if [ -n "$USER_NAME" ]; then
    usermod -aG dynn "$USER_NAME" || exit 1
    echo "added $USER_NAME to group dynn (log in again for it to take effect)"
fi
install -d -m 0755 /usr/local/lib/dynn || exit 1
install -m 0755 "$HERE/udev/dynn-permissions.sh" /usr/local/lib/dynn/dynn-permissions.sh || exit 1
install -m 0644 "$HERE/udev/99-dynn-dvfs.rules" /etc/udev/rules.d/99-dynn-dvfs.rules || exit 1
udevadm control --reload-rules || true
if [ -d /run/systemd/system ]; then
    install -m 0644 "$HERE/udev/dynn-permissions.service" /etc/systemd/system/dynn-permissions.service || exit 1
    systemctl daemon-reload && systemctl enable dynn-permissions.service || exit 1
else
    echo "no systemd: the permissions are applied now and on udev events, not at boot" >&2
fi
# Apply now as well: this boot's udev events have already happened.
/bin/sh /usr/local/lib/dynn/dynn-permissions.sh all || exit 1
echo "installed: clock files and power sensors are now group dynn (see: python -m runtime doctor)"
