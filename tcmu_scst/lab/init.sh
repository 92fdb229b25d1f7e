#!/bin/sh
# /init of the tcmu-scst lab guest (busybox sh, PID 1). Generic: the command to run
# comes from a job script on the host, whose path is on the kernel command line
# (tcmu_scst_lab.job=PATH). Ends by printing the job's exit status and powering off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
START="<<<tcmu-scst-lab:start>>>"
EXIT="<<<tcmu-scst-lab:exit="

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The target core writes APTPL reservations and ALUA state through kernel threads,
# whose root is this initramfs: give it the directories it expects.
mkdir -p /var/target/pr /var/target/alua

say() { echo "tcmu-scst-lab: $*" > /dev/console; }
finish() {
    # $1 = status to report. Unmount the writable share so its data reaches the host.
    sync
    umount /newroot/results 2>/dev/null
    echo "${EXIT}$1>>>" > /dev/console
    poweroff -f
    reboot -f
}

RELEASE=$(cat /etc/lab/release)
JOB= ; RESULTS=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        tcmu_scst_lab.job=*) JOB=${arg#*=} ;;
        tcmu_scst_lab.results=*) RESULTS=${arg#*=} ;;
    esac
done

# Modules in dependency order, computed on the host from modules.dep.
while read -r kind path; do
    [ -n "$path" ] || continue
    if ! insmod "/lib/modules/$RELEASE/$path" 2>/tmp/insmod.err; then
        if [ "$kind" = required ] && ! grep -q 'File exists' /tmp/insmod.err; then
            say "cannot load required module $path: $(cat /tmp/insmod.err)"
            finish 125
        fi
    fi
done < /etc/lab/modules.boot

# Host root over 9p, read-only, with a tmpfs overlay so the guest may write anywhere.
mkdir -p /mnt/host /mnt/rw /newroot
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /mnt/host; then
    say "cannot mount the host root over 9p (mount tag hostroot)"; finish 125
fi
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw
mkdir -p /mnt/rw/upper /mnt/rw/work
if ! mount -t overlay overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work /newroot; then
    say "cannot mount the tmpfs overlay over the host root"; finish 125
fi

mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t configfs configfs /sys/kernel/config 2>/dev/null
mount -t configfs configfs /newroot/sys/kernel/config
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mkdir -p /newroot/run/tcmu-scst-lab /newroot/results /newroot/lib/modules/$RELEASE
# modprobe inside the chroot (kmod) reads the same module tree as the initramfs.
mount --bind /lib/modules/$RELEASE /newroot/lib/modules/$RELEASE
if [ "$RESULTS" = 1 ]; then
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results /newroot/results \
        || say "cannot mount the results share at /results"
fi

hostname tcmu-scst-lab
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    ip addr add 10.0.2.15/24 dev eth0
    ip link set eth0 up
    ip route add default via 10.0.2.2
fi

if [ -z "$JOB" ] || [ ! -f "/newroot$JOB" ]; then
    say "no job script (tcmu_scst_lab.job=$JOB) in the host root"; finish 125
fi
cp "/newroot$JOB" /newroot/run/tcmu-scst-lab/job.sh

echo "$START" > /dev/console
chroot /newroot /bin/sh /run/tcmu-scst-lab/job.sh < /dev/console > /dev/console 2>&1
finish $?
