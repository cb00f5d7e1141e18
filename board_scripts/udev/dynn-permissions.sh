#!/bin/sh
# Give group dynn access to the clock files and power sensors that runtime/boards/*.json declare, so
# DVFS and power readings work without sudo. Installed by board_scripts/install_udev_rule.sh; run by
# udev for one device (99-dynn-dvfs.rules) and at boot for all of them (dynn-permissions.service),
# because sysfs modes do not survive a reboot and cpufreq files are recreated when a CPU comes online.
# usage: dynn-permissions.sh all | cpu DIR | devfreq DIR | ina231 DIR
# DYNN_SYSFS (a fake tree's root) and DYNN_GROUP exist for the tests.
set -u
SYS=${DYNN_SYSFS:-}/sys
GROUP=${DYNN_GROUP:-dynn}
CPUFREQ_FILES="scaling_governor scaling_setspeed scaling_min_freq scaling_max_freq"
DEVFREQ_FILES="min_freq max_freq"
# Hardkernel 4.x INA231: sensor_* and enable are 0660 root and the sensors boot disabled (issue 15 audit)
INA231_READ="sensor_W sensor_A sensor_V sensor_name update_period"

grant() {  # grant MODE DIR FILE...: chgrp + chmod the files of DIR that exist
    mode=$1 dir=$2
    shift 2
    for f in "$@"; do
        [ -e "$dir/$f" ] || continue
        chgrp "$GROUP" "$dir/$f" && chmod "$mode" "$dir/$f"
    done
}

ina231() {
    grant g+r "$1" $INA231_READ
    grant g+rw "$1" enable
}

case "${1:-all}" in
    cpu) grant g+rw "$2/cpufreq" $CPUFREQ_FILES ;;
    devfreq) grant g+rw "$2" $DEVFREQ_FILES ;;
    ina231) ina231 "$2" ;;
    all)
        for d in "$SYS"/devices/system/cpu/cpufreq/policy* "$SYS"/devices/system/cpu/cpu[0-9]*/cpufreq; do
            [ -d "$d" ] && grant g+rw "$d" $CPUFREQ_FILES
        done
        # the GPU devfreq nodes the board files look for (Nano 57000000.gpu; XU3 Mali, any kernel's name)
        for d in "$SYS"/devices/57000000.gpu/devfreq/* "$SYS"/devices/platform/host1x/57000000.gpu/devfreq/* \
                 "$SYS"/devices/gpu.0/devfreq/* "$SYS"/devices/platform/11800000.mali/devfreq/* \
                 "$SYS"/devices/platform/soc/11800000.gpu/devfreq/*; do
            [ -d "$d" ] && grant g+rw "$d" $DEVFREQ_FILES
        done
        for d in "$SYS"/bus/i2c/drivers/INA231/*-00*; do
            [ -d "$d" ] && ina231 "$d"
        done
        ;;
    *) echo "usage: $0 all | cpu DIR | devfreq DIR | ina231 DIR" >&2; exit 2 ;;
esac
exit 0
