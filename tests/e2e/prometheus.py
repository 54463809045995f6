"""Start Debian's Prometheus on loopback for a test, scraping given targets every second."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def end_process(process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """Terminate, and kill what does not exit in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()


def metric_sum(text: str, name: str, *must: str) -> float:
    """Sum of a metric's samples in Prometheus' text format whose lines contain every `must` string."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if (line.startswith(name + " ") or line.startswith(name + "{")) and all(m in line for m in must))


def free_port() -> int:
    """A TCP port nobody listens on now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A real Prometheus process; stop() ends it."""

    def __init__(self, workdir: Path, targets: list[str], scrape_s: float = 1.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (bash .ci/run installs Debian's package)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        every = f"{int(scrape_s * 1000)}ms"  # Prometheus durations take no decimals
        config.write_text(json.dumps({
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "scrape_configs": [{"job_name": "kubevirt", "static_configs": [{"targets": targets}]}],
        }))
        self.log_path = workdir / "prometheus.log"
        self.tsdb = workdir / "tsdb"
        self.argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={self.tsdb}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"]
        self.start()

    def start(self) -> None:
        """Start (again, after stop(): same port, same data)."""
        self.log = self.log_path.open("a")
        self.process = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait(lambda: urllib.request.urlopen(f"{self.url}/-/ready", timeout=1).status == 200, 30)

    def _wait(self, ready: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text()[-2000:]
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{tail}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError("prometheus did not get ready")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            return list(json.load(response)["data"]["result"])

    def wait_for(self, promql: str, timeout_s: float = 30) -> list[dict[str, Any]]:
        """The first non-empty answer of a query (the first scrape lands ~6 s after start)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.2)
        raise TimeoutError(f"no data for {promql}")

    def backfill(self, openmetrics: str) -> None:
        """Add past samples (OpenMetrics text, timestamps in seconds) as blocks of their own with
        promtool, as an administrator backfills, and restart to load them."""
        source = self.tsdb.parent / "backfill.om"
        source.write_text(openmetrics)
        self.stop()
        subprocess.run([shutil.which("promtool") or "promtool", "tsdb", "create-blocks-from", "openmetrics",
                        str(source), str(self.tsdb)], check=True, capture_output=True)
        self.start()

    def stop(self) -> None:
        """End the process."""
        end_process(self.process)
        self.log.close()
