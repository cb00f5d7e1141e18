#!/bin/sh
# Let group "dynn" change CPU/GPU clocks without sudo (files declared in runtime/boards/*.json).
# usage: sudo sh board_scripts/install_udev_rule.sh [USER]      USER defaults to $SUDO_USER
#        then log out and in again (or `newgrp dynn`) so the group membership takes effect.
# Undo:  sudo rm /etc/udev/rules.d/99-dynn-dvfs.rules && sudo udevadm control --reload-rules (and reboot)
if [ "$(id -u)" != 0 ]; then
    echo "install_udev_rule.sh: must run as root: sudo sh $0 [user]" >&2
    exit 1
fi
HERE=$(cd "$(dirname "$0")" && pwd)
USER_NAME=${1:-$SUDO_USER}

getent group dynn >/dev/null || groupadd --system dynn || exit 1
if [ -n "$USER_NAME" ]; then
    usermod -aG dynn "$USER_NAME" || exit 1
    echo "added $USER_NAME to group dynn (log in again for it to take effect)"
fi
install -m 0644 "$HERE/udev/99-dynn-dvfs.rules" /etc/udev/rules.d/99-dynn-dvfs.rules || exit 1
udevadm control --reload-rules || true

# Apply now as well (udev 'add' events have already happened for this boot).
for d in /sys/devices/system/cpu/cpu[0-9]*/cpufreq; do
    [ -d "$d" ] || continue
    for f in scaling_governor scaling_setspeed scaling_min_freq scaling_max_freq; do
        [ -e "$d/$f" ] && chgrp dynn "$d/$f" && chmod g+w "$d/$f"
    done
done
for d in /sys/class/devfreq/57000000.gpu /sys/devices/platform/11800000.mali/devfreq/devfreq0 \
         /sys/bus/platform/drivers/mali/11800000.mali/devfreq/devfreq0; do
    [ -d "$d" ] || continue
    for f in min_freq max_freq; do
        [ -e "$d/$f" ] && chgrp dynn "$d/$f" && chmod g+w "$d/$f"
    done
done
echo "installed /etc/udev/rules.d/99-dynn-dvfs.rules; clock files are now group dynn, group-writable"
