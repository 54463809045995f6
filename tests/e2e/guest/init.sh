#!/bin/busybox sh
# A real guest's /init: loads virtio-mem and the balloon driver, onlines hotplugged memory as
# movable (so that it can be unplugged again), and holds demand in a tmpfs on the host's commands,
# read line by line from the second serial port (ttyS1):
#   ping          -> pong
#   hold MIB      -> held MIB      (what the tmpfs holds now: the old amount if the guest ran out)
#   meminfo       -> meminfo TOTAL_KIB AVAILABLE_KIB
# Memory in a tmpfs is what a guest cannot reclaim without swap: MemAvailable falls by as much.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for module in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_balloon virtio_mem; do
    insmod "/lib/modules/$module.ko" || echo "init: $module did not load"
done
mount -t tmpfs -o size=1024g demand /demand
stty -F /dev/ttyS1 raw -echo
exec 3<>/dev/ttyS1
echo "init: ready" >/dev/console

# Answers use shell builtins only: a guest squeezed by an unplug has no memory for a new process,
# and a fork then has the kernel panic ("System is deadlocked on memory": PID 1 cannot be killed).
held=0
while read -r command argument <&3; do
    case "$command" in
        ping) echo pong >&3 ;;
        hold)
            if [ "$argument" -gt "$held" ]; then  # allocated, not written: fast under emulation
                if fallocate -l "${argument}M" /demand/held; then
                    held="$argument"
                else  # tmpfs gives back what a failed fallocate allocated
                    echo "init: hold $argument: out of memory" >/dev/console
                fi
            else
                truncate -s "${argument}M" /demand/held && held="$argument"
            fi
            echo "held $held" >&3 ;;
        meminfo)
            total=0 available=0
            while read -r key value unit; do
                case "$key" in
                    MemTotal:) total="$value" ;;
                    MemAvailable:) available="$value" ;;
                esac
            done </proc/meminfo
            echo "meminfo $total $available" >&3 ;;
        *) echo "error unknown command: $command" >&3 ;;
    esac
done
echo "init: the host's channel closed" >/dev/console
exec sleep 2147483647
