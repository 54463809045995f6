"""A real Kubernetes control plane on loopback: etcd and kube-apiserver built from their Go
modules (build.sh), RBAC on, a static admin token, ServiceAccount tokens signed by a key of
our own (so a test can act with exactly a ServiceAccount's RBAC), self-signed serving certs."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.certs import authority, signed
from tests.e2e.prometheus import end_process, free_port

BUILD = Path(__file__).resolve().parent / "build.sh"
ADMIN_TOKEN = "dm-e2e-admin-token"


def binaries() -> Path:
    """The cached bin folder of the pinned control plane (builds it the first time: minutes)."""
    out = subprocess.run(["bash", str(BUILD)], check=True, capture_output=True, text=True, timeout=3600)
    return Path(out.stdout.strip().splitlines()[-1])


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; the message says what kubectl said, not only that it failed."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{str(self.stderr).strip()[-2000:]}"


class Cluster:
    """What the tests need of a cluster: kubectl, raw GETs, kubeconfigs for other identities."""

    bin: Path
    url: str
    kubeconfig: Path
    audit_log: Path | None = None

    def kubectl(self, *args: str, stdin: str | None = None, kubeconfig: Path | None = None,
                check: bool = True, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """Real kubectl against this cluster."""
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig)}
        out = subprocess.run([str(self.bin / "kubectl"), *args], input=stdin, capture_output=True, text=True,
                             env=env, check=False, timeout=timeout_s)
        if check and out.returncode:
            raise KubectlError(out.returncode, out.args, out.stdout, out.stderr)
        return out

    def get(self, path: str, *, raw: bool = False) -> Any:
        """GET from the API server (JSON, or raw bytes)."""
        raise NotImplementedError

    def ensure_namespace(self, name: str) -> None:
        """Create a namespace unless it exists (an existing cluster may have it already)."""
        manifest = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.kubectl("apply", "-f", "-", stdin=manifest)

    def write_kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig that authenticates with `token`."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": self._cluster_entry()}],
            "users": [{"name": "e2e", "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}]}))
        return path

    def _cluster_entry(self) -> dict[str, Any]:
        return {"server": self.url, "insecure-skip-tls-verify": True}

    def stop(self) -> None:
        """Nothing to stop by default."""


class ExistingCluster(Cluster):
    """A cluster the user gives (DM_E2E_KUBECONFIG), e.g. kind with real KubeVirt: nothing started."""

    def __init__(self, kubeconfig: Path) -> None:
        import yaml

        self.bin = binaries()
        self.kubeconfig = kubeconfig
        cfg = yaml.safe_load(kubeconfig.read_text())
        context = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg["current-context"])
        self._entry = dict(next(c["cluster"] for c in cfg["clusters"] if c["name"] == context["cluster"]))
        self.url = self._entry["server"]

    def _cluster_entry(self) -> dict[str, Any]:
        return self._entry

    def get(self, path: str, *, raw: bool = False) -> Any:
        """GET through kubectl (the user's credentials)."""
        out = self.kubectl("get", "--raw", path).stdout
        return out.encode() if raw else json.loads(out)


class ControlPlane(Cluster):
    """etcd + kube-apiserver processes; stop() ends both."""

    def __init__(self, workdir: Path) -> None:
        self.bin = binaries()
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        etcd_port, peer_port, self.port = free_port(), free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._start("etcd", [str(self.bin / "etcd"), f"--data-dir={workdir / 'etcd'}",
                             f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                             f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                             f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                             f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                             f"--initial-cluster=default=http://127.0.0.1:{peer_port}"])
        self._wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{etcd_port}/health", timeout=1).status == 200)
        key, pub = workdir / "sa.key", workdir / "sa.pub"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], check=True,
                       capture_output=True)
        tokens = workdir / "tokens.csv"
        tokens.write_text(f'{ADMIN_TOKEN},e2e-admin,e2e-admin,"system:masters"\n')
        issuer = "https://kubernetes.default.svc.cluster.local"
        audit_policy = workdir / "audit-policy.yaml"  # who called what: the RBAC-usage test reads it
        # patches of VirtualMachines with their bodies (tests tell a resize from an annotation), the rest
        # without
        audit_policy.write_text('{"apiVersion": "audit.k8s.io/v1", "kind": "Policy", '
                                '"omitStages": ["RequestReceived"], "rules": ['
                                '{"level": "Request", "verbs": ["patch"], '
                                '"resources": [{"group": "kubevirt.io", "resources": ["virtualmachines"]}]}, '
                                '{"level": "Metadata"}]}')
        self.audit_log = workdir / "audit.log"
        # the front-proxy (request header) CA: aggregated API servers such as KubeVirt's virt-api read it
        # from kube-system/extension-apiserver-authentication, and panic at start without it
        front = authority(workdir / "front-proxy", "front-proxy-ca")
        proxy = signed(front, workdir / "front-proxy", "front-proxy-client", common_name="front-proxy-client",
                       server=False)
        self._start("kube-apiserver", [
            str(self.bin / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={workdir / 'certs'}", f"--token-auth-file={tokens}", "--authorization-mode=RBAC",
            f"--service-account-issuer={issuer}", f"--api-audiences={issuer}",
            f"--service-account-key-file={pub}", f"--service-account-signing-key-file={key}",
            "--service-cluster-ip-range=10.96.0.0/16", "--profiling=false",
            f"--audit-policy-file={audit_policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
            f"--requestheader-client-ca-file={front.cert}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-", f"--proxy-client-cert-file={proxy.cert}",
            f"--proxy-client-key-file={proxy.key}"])
        self._wait(lambda: self.get("/readyz", raw=True) == b"ok", timeout_s=120)
        self.kubeconfig = self.write_kubeconfig(workdir / "admin.kubeconfig", ADMIN_TOKEN)

    def _start(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def _wait(self, ready: Any, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for p in self.processes:
                if p.poll() is not None:
                    logs = "\n".join(f.read_text()[-3000:] for f in self.workdir.glob("*.log"))
                    raise RuntimeError(f"{p.args!r} exited with {p.returncode}:\n{logs}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the control plane did not get ready")

    def get(self, path: str, *, token: str = ADMIN_TOKEN, raw: bool = False) -> Any:
        """GET from the API server (JSON, or raw bytes)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            body = response.read()
        return body if raw else json.loads(body)

    def stop(self) -> None:
        """End kube-apiserver, then etcd."""
        for p in reversed(self.processes):
            end_process(p, 15)
