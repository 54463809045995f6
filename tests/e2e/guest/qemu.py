"""A real Linux guest under QEMU's software emulation, shaped the way virt-launcher shapes a VMI's
domain for memory hotplug: boot memory = `guestAtBoot`, a virtio-mem region up to `maxGuest`, the
balloon's statistics polled (they are the numbers KubeVirt exports as `kubevirt_vmi_memory_*`).

The kernel and initramfs come from Debian's packages (build.sh); the guest's /init (init.sh) holds
demand in a tmpfs on commands sent over its second serial port. Facts:
../shared/reference/real-guest.md.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from qemu.qmp import ConnectError, QMPClient

from tests.e2e.prometheus import end_process

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
VIRTIO_MEM = "/machine/peripheral/vm0"
BALLOON = "/machine/peripheral/balloon0"
STATS_PERIOD_S = 2
"""How often the balloon driver reports (QEMU's guest-stats-polling-interval)."""


class GuestError(RuntimeError):
    """The guest did not do what it was asked, with what it printed on its console."""


def artifacts() -> Path:
    """The cached folder with vmlinuz and initramfs.cpio.gz (built the first time: seconds)."""
    if shutil.which("qemu-system-x86_64") is None:
        raise GuestError("qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86); "
                         ".ci/run installs it")
    out = subprocess.run(["bash", str(HERE / "build.sh")], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise GuestError(f"tests/e2e/guest/build.sh failed:\n{out.stderr.strip()}")
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class BalloonStats:
    """What the guest's balloon driver last reported, in bytes (faults: a count)."""

    total: int
    """MemTotal: kubevirt_vmi_memory_available_bytes."""
    available: int
    """MemAvailable: kubevirt_vmi_memory_usable_bytes."""
    free: int
    """MemFree: kubevirt_vmi_memory_unused_bytes."""
    major_faults: int
    swap_in: int


class QemuGuest:
    """One guest: a QEMU process, its QMP monitor and the control channel to its /init."""

    def __init__(self, images: Path, boot: int, max_guest: int, name: str) -> None:
        if boot % (2 * MIB) or max_guest < boot:
            raise GuestError(f"{name}: boot {boot} and maxGuest {max_guest} are no guest shape")
        self.boot, self.max_guest, self.name = boot, max_guest, name
        self.dir = Path(tempfile.mkdtemp(prefix="dm-guest-"))  # short: unix socket paths end at 108 bytes
        self.console = self.dir / "console.log"
        region = max(max_guest - boot, 2 * MIB)
        self.process = subprocess.Popen([
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-cpu", "max", "-smp", "1",
            "-m", f"{boot // MIB}M,maxmem={(boot + region) // MIB}M,slots=2",
            "-object", f"memory-backend-ram,id=boot,size={boot // MIB}M", "-numa", "node,nodeid=0,memdev=boot",
            "-object", f"memory-backend-ram,id=hotplug,size={region // MIB}M",
            "-device", "virtio-mem-pci,id=vm0,memdev=hotplug,node=0,block-size=2M,requested-size=0",
            "-device", "virtio-balloon-pci,id=balloon0",
            "-display", "none", "-nodefaults", "-no-user-config",
            "-serial", f"file:{self.console}",
            "-serial", f"unix:{self.dir / 'control.sock'},server=on,wait=off",
            "-qmp", f"unix:{self.dir / 'qmp.sock'},server=on,wait=off",
            "-kernel", str(images / "vmlinuz"), "-initrd", str(images / "initramfs.cpio.gz"),
            "-append", "console=ttyS0 quiet memhp_default_state=online_movable",
        ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.dir / "qemu.log", "wb"))  # noqa: SIM115
        self._qmp: QMPClient | None = None
        self._qmp_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        """QMP is asyncio: this guest's own loop, run by whichever thread asks (one at a time)."""
        self._control: socket.socket | None = None
        self._buffer = b""
        self._control_lock = threading.Lock()

    # --- the monitor: what virt-launcher asks of QEMU ------------------------------------------

    def _monitor(self, command: str, **arguments: object) -> object:
        with self._qmp_lock:
            return self._loop.run_until_complete(asyncio.wait_for(self._execute(command, arguments), 30))

    async def _execute(self, command: str, arguments: dict[str, object]) -> object:
        if self._qmp is None:
            qmp = await self._connect_monitor(timeout_s=20)
            await qmp.execute("qom-set", {"path": BALLOON, "property": "guest-stats-polling-interval",
                                          "value": STATS_PERIOD_S})
            self._qmp = qmp
        return await self._qmp.execute(command, arguments)

    async def _connect_monitor(self, timeout_s: float) -> QMPClient:
        """QEMU opens its monitor socket a moment after it starts (seconds on a loaded machine):
        until then connecting finds no socket, so try again while QEMU runs."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            qmp = QMPClient(self.name)
            try:
                await qmp.connect(str(self.dir / "qmp.sock"))
                return qmp
            except ConnectError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def request(self, guest: int) -> None:
        """Ask virtio-mem for a guest of this size: plugs or unplugs what lies above the boot memory."""
        if not self.boot <= guest <= self.max_guest or guest % (2 * MIB):
            raise GuestError(f"{self.name}: {guest} bytes is outside {self.boot}..{self.max_guest} or not 2Mi-aligned")
        self._monitor("qom-set", path=VIRTIO_MEM, property="requested-size", value=guest - self.boot)

    def current(self) -> int:
        """The memory the guest holds now: boot memory plus what virtio-mem has plugged (QEMU's `size`)."""
        return self.boot + int(cast(int, self._monitor("qom-get", path=VIRTIO_MEM, property="size")))

    def stats(self) -> BalloonStats | None:
        """The balloon driver's last report; None before its first (the guest is still booting)."""
        got = cast(dict[str, Any], self._monitor("qom-get", path=BALLOON, property="guest-stats"))
        stats = got.get("stats") or {}
        if not got.get("last-update") or stats.get("stat-total-memory", -1) < 0:
            return None
        return BalloonStats(total=stats["stat-total-memory"], available=stats["stat-available-memory"],
                            free=stats["stat-free-memory"], major_faults=max(0, stats["stat-major-faults"]),
                            swap_in=max(0, stats["stat-swap-in"]))

    # --- the control channel: what the test asks of the guest ----------------------------------

    def _ask(self, line: str, answer: str, timeout_s: float) -> list[str]:
        """Send one command to the guest's /init and return the words of its answer."""
        with self._control_lock:
            if self._control is None:
                self._control = self._connect(timeout_s)
            self._control.settimeout(timeout_s)
            self._control.sendall(line.encode() + b"\n")
            while True:  # answers to earlier pings (sent while it booted) come first
                words = self._readline().split()
                if words and words[0] == answer:
                    return words[1:]
                if words and words[0] == "error":
                    raise GuestError(f"{self.name}: {line!r}: {' '.join(words)}")

    def _connect(self, timeout_s: float) -> socket.socket:
        """Connect to the control channel and wait until /init answers (the kernel boots in seconds)."""
        deadline = time.monotonic() + timeout_s
        sock = socket.socket(socket.AF_UNIX)
        while True:
            self._check_alive()
            try:
                sock.connect(str(self.dir / "control.sock"))
                break
            except OSError:
                if time.monotonic() > deadline:
                    opened = "QEMU's control socket never opened"
                    raise GuestError(f"{self.name}: {opened}\n{self.console_tail()}") from None
                time.sleep(0.2)
        self._buffer = b""
        self._control = sock
        while time.monotonic() < deadline:
            sock.sendall(b"ping\n")
            sock.settimeout(1.0)
            try:
                if self._readline() == "pong":
                    return sock
            except TimeoutError:
                continue
        raise GuestError(f"{self.name}: /init did not answer in {timeout_s:.0f}s\n{self.console_tail()}")

    def _readline(self) -> str:
        sock = self._control
        assert sock is not None
        while b"\n" not in self._buffer:
            chunk = sock.recv(4096)
            if not chunk:
                raise GuestError(f"{self.name}: the control channel closed\n{self.console_tail()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def wait_booted(self, timeout_s: float = 120) -> None:
        """Until the guest's /init answers."""
        self._ask("ping", "pong", timeout_s)

    def hold(self, mib: int, timeout_s: float = 120) -> int:
        """Hold this much memory in the guest's tmpfs (allocating runs at about 100 MiB/s under
        emulation); returns what it holds then, less if the guest ran out of memory."""
        return int(self._ask(f"hold {mib}", "held", timeout_s)[0])

    def meminfo(self, timeout_s: float = 30) -> tuple[int, int]:
        """The guest's own MemTotal and MemAvailable, in bytes, from its /proc/meminfo."""
        total, available = self._ask("meminfo", "meminfo", timeout_s)
        return int(total) * 1024, int(available) * 1024

    # --- the process -----------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            qemu_log = (self.dir / "qemu.log").read_text(errors="replace").strip()
            raise GuestError(f"{self.name}: QEMU exited with {self.process.returncode}: {qemu_log}\n"
                             f"{self.console_tail()}")

    def console_tail(self, lines: int = 20) -> str:
        """The end of what the guest printed: the detail of a failure."""
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "guest console:\n" + "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """CPU time the QEMU process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def rss(self) -> int:
        """Resident memory of the QEMU process, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        with self._control_lock:
            if self._control is not None:
                self._control.close()
        with self._qmp_lock:
            if self._qmp is not None:
                self._loop.run_until_complete(self._qmp.disconnect())
            self._loop.close()
        end_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)
