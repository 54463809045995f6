#!/usr/bin/env bash
# Build what a real guest boots: Debian's kernel and a busybox initramfs, from Debian's own
# packages, fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing installed,
# nothing written to /boot). Facts: ../shared/reference/real-guest.md.
#
# The initramfs holds busybox-static, the virtio modules that virtio-mem and the balloon need, and
# init.sh (the guest's /init: demand held in a tmpfs, on commands from the host over ttyS1).
# Cached outside the work tree like the control plane, in $DM_GUEST_CACHE (default
# ~/.cache/kubevirt-dynamic-memory/guest/<versions>). Prints that directory on its last line; it
# holds vmlinuz and initramfs.cpio.gz.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# the kernel Debian's linux-image-amd64 points at today, unless one is named
kernel_pkg="${GUEST_KERNEL_PACKAGE:-$(apt-cache depends linux-image-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1)}"
if [ -z "$kernel_pkg" ]; then
    echo "error: apt knows no linux-image-amd64 package; run apt-get update (or set GUEST_KERNEL_PACKAGE)" >&2
    exit 1
fi
kernel_version="$(apt-cache show --no-all-versions "$kernel_pkg" | sed -n 's/^Version: //p' | head -1)"
busybox_version="$(apt-cache show --no-all-versions busybox-static | sed -n 's/^Version: //p' | head -1)"
RECIPE=1  # bump when this script builds differently, so caches of the old recipe are not reused
init_sum="$(sha256sum "$here/init.sh" | cut -c1-12)"
cache="${DM_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-dynamic-memory/guest}"
out="$cache/r$RECIPE-$kernel_pkg-$kernel_version-busybox-${busybox_version//:/_}-i$init_sum"
if [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ]; then
    echo "$out"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download "$kernel_pkg=$kernel_version" "busybox-static=$busybox_version" >/dev/null 2>&1 \
    || { echo "error: apt-get download $kernel_pkg busybox-static failed (no package lists? run apt-get update)" >&2; exit 1; }
dpkg-deb -x ./linux-image-*.deb kernel
dpkg-deb -x ./busybox-static_*.deb busybox

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,demand,lib/modules}
cp busybox/bin/busybox "$root/bin/busybox"
cp "$here/init.sh" "$root/init"
chmod +x "$root/init"
# the order they load in: each needs the ones before it
for module in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_balloon virtio_mem; do
    found="$(find kernel/lib/modules -name "$module.ko*" | head -1)"
    [ -n "$found" ] || { echo "error: $kernel_pkg has no $module module" >&2; exit 1; }
    case "$found" in
        *.ko.xz) xz -dc "$found" > "$root/lib/modules/$module.ko" ;;
        *.ko) cp "$found" "$root/lib/modules/$module.ko" ;;
        *) echo "error: $found: a module compression this script does not know" >&2; exit 1 ;;
    esac
done

mkdir -p "$out.tmp"
cp kernel/boot/vmlinuz-* "$out.tmp/vmlinuz"
(cd "$root" && find . | cpio --quiet -o -H newc --owner 0:0) | gzip -1 > "$out.tmp/initramfs.cpio.gz"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
