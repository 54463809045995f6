"""KubeVirt v1.8.0's own virt-api and virt-controller on our loopback control plane, with the real
kube-scheduler and kwok playing the kubelets (build.sh builds them all from their Go modules).

KubeVirt's CRDs, RBAC and admission webhooks come from KubeVirt's own generator code
(manifests/main.go); the webhooks are pointed at virt-api on 127.0.0.1 with a CA of ours. The
KubeVirt CR is deploy/examples/kubevirt-cr.yaml, the one the kind path installs, with the status
that virt-operator would write. Only virt-handler is ours (handler.py). Facts behind each step:
../shared/reference/real-kubevirt.md.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.certs import authority, signed
from tests.e2e.controlplane.cluster import ControlPlane
from tests.e2e.prometheus import end_process, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
NAMESPACE = "kubevirt"
KUBEVIRT_CR = ROOT / "deploy" / "examples" / "kubevirt-cr.yaml"
MACHINE_TYPE = "q35"
NODE_LABELS = {"kubevirt.io/schedulable": "true", f"machine-type.node.kubevirt.io/{MACHINE_TYPE}": "true",
               "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "type": "kwok"}


SERVED_WEBHOOKS = ("virt-api-validator", "virt-api-mutator")
"""virt-api's admission webhooks for KubeVirt's own objects. Left out: virt-operator's (no virt-operator
runs: the rig installs what it would) and the virt-launcher pod mutator (no real launcher pods)."""


def binaries() -> Path:
    """The cached bin folder of KubeVirt, kwok and kube-scheduler (builds them the first time: minutes)."""
    out = subprocess.run(["bash", str(HERE / "build.sh")], check=True, capture_output=True, text=True, timeout=3600)
    return Path(out.stdout.strip().splitlines()[-1])


def manifests(bin_dir: Path, api_port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """KubeVirt's install objects from its own generator, webhooks pointed at virt-api on loopback."""
    out = subprocess.run([str(bin_dir / "dm-kubevirt-manifests"), NAMESPACE], check=True, capture_output=True,
                         text=True, timeout=120)
    items: list[dict[str, Any]] = [i for i in json.loads(out.stdout)["items"]
                                   if not i["kind"].endswith("WebhookConfiguration")
                                   or i["metadata"]["name"] in SERVED_WEBHOOKS]
    bundle = base64.b64encode(ca_pem).decode()
    for item in items:
        if item["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            for hook in item.get("webhooks") or []:
                service = hook["clientConfig"].pop("service", None) or {}
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{api_port}{service.get('path', '')}",
                                        "caBundle": bundle}
    return items


class KubeVirtRig:
    """virt-api, virt-controller, kube-scheduler and kwok, started on `cp`; stop() ends them."""

    def __init__(self, cp: ControlPlane, workdir: Path) -> None:
        self.cp, self.workdir, self.bin = cp, workdir, binaries()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        certs = workdir / "certs"
        ca = authority(certs, "kubevirt-ca")
        serving = signed(ca, certs, "virt-api", common_name="virt-api.kubevirt.svc", server=True)
        prom = signed(ca, certs, "virt-controller", common_name="virt-controller.kubevirt.svc", server=True)
        self.api_port = free_port()
        cp.ensure_namespace(NAMESPACE)
        items = manifests(self.bin, self.api_port, ca.cert.read_bytes())
        crds = [i for i in items if i["kind"] == "CustomResourceDefinition"]
        webhooks = [i for i in items if i["kind"].endswith("WebhookConfiguration")]
        rest = [i for i in items if i not in crds and i not in webhooks]
        self.apply(crds)
        cp.kubectl("wait", "--for=condition=Established", "--timeout=120s", "crd", "--all")
        self.apply(rest)
        self.apply([{"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "kubevirt-ca", "namespace": NAMESPACE},
                     "data": {"ca-bundle": ca.cert.read_text()}}])
        cp.kubectl("apply", "-f", str(KUBEVIRT_CR))
        # what virt-operator would write: virt-controller ignores a KubeVirt CR that is not Deployed,
        # and without a default architecture it refuses every VM with maxGuest
        # (`kubectl ... kubevirt`: the name an administrator types, found since our CRD has no such category)
        cp.kubectl("patch", "kubevirt", "kubevirt", "-n", NAMESPACE, "--subresource=status",
                   "--type=merge", "-p", json.dumps({"status": {"phase": "Deployed", "defaultArchitecture": "amd64"}}))
        api_cfg = self.identity("kubevirt-apiserver")
        controller_cfg = self.identity("kubevirt-controller")
        self.handler_kubeconfig = self.identity("kubevirt-handler")
        self._start("kube-scheduler", [str(self.bin / "kube-scheduler"), f"--kubeconfig={cp.kubeconfig}",
                                       "--leader-elect=false", "--bind-address=127.0.0.1",
                                       f"--secure-port={free_port()}"])
        self._start("kwok", [str(self.bin / "kwok"), f"--kubeconfig={cp.kubeconfig}", "--manage-all-nodes=true",
                             "--node-lease-duration-seconds=40", f"--server-address=127.0.0.1:{free_port()}"])
        self._start("virt-api", [str(self.bin / "virt-api"), f"--kubeconfig={api_cfg}", "--listen=127.0.0.1",
                                 f"--port={self.api_port}", f"--tls-cert-file={serving.cert}",
                                 f"--tls-key-file={serving.key}", f"--console-server-port={free_port()}",
                                 f"--handler-cert-file={serving.cert}", f"--handler-key-file={serving.key}"])
        self._start("virt-controller", [
            str(self.bin / "virt-controller"), f"--kubeconfig={controller_cfg}", "--listen=127.0.0.1",
            f"--port={free_port()}", f"--prom-cert-file={prom.cert}", f"--prom-key-file={prom.key}",
            "--launcher-image=quay.io/kubevirt/virt-launcher:v1.8.0",
            "--exporter-image=quay.io/kubevirt/virt-exportserver:v1.8.0",
            "--leader-elect-lease-duration=60s", "--leader-elect-renew-deadline=45s"])
        self.apply(webhooks)
        self._wait(self._api_ready, 120, "virt-api answering")

    def apply(self, items: list[dict[str, Any]]) -> None:
        """Server-side apply (KubeVirt's CRDs are too large for the last-applied annotation)."""
        if items:
            self.cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    def identity(self, account: str) -> Path:
        """A kubeconfig with a token of one of KubeVirt's ServiceAccounts (its webhooks know them by name)."""
        token = self.cp.kubectl("create", "token", account, "-n", NAMESPACE, "--duration=4h").stdout.strip()
        return self.cp.write_kubeconfig(self.workdir / f"{account}.kubeconfig", token)

    def _api_ready(self) -> bool:
        out = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
                              f"https://127.0.0.1:{self.api_port}/healthz"], capture_output=True, text=True,
                             timeout=10, check=False)
        return out.stdout == "200"

    def _start(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def _wait(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, p in self.processes.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")
            if ready():
                return
            time.sleep(0.3)
        raise TimeoutError(f"waited {timeout_s:.0f}s for {what}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        """The end of one component's log."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def add_node(self, name: str, memory: str, *, cpu: str = "32", extra_labels: dict[str, str] | None = None) -> None:
        """A kwok node with what KubeVirt's pods ask of a node, made schedulable once kwok has it Ready."""
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {**NODE_LABELS, "kubernetes.io/hostname": name,
                                                      **(extra_labels or {})},
                             "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {}, "status": {"allocatable": {}, "capacity": {}}}
        self.cp.kubectl("apply", "-f", "-", stdin=json.dumps(node))
        resources = {"memory": memory, "cpu": cpu, "pods": "110", "ephemeral-storage": "100Gi",
                     "devices.kubevirt.io/kvm": "1k", "devices.kubevirt.io/tun": "1k",
                     "devices.kubevirt.io/vhost-net": "1k"}
        self.cp.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p",
                        json.dumps({"status": {"allocatable": resources, "capacity": resources}}))

        def ready() -> bool:
            got = json.loads(self.cp.kubectl("get", "node", name, "-o", "json").stdout)
            conditions = {c["type"]: c["status"] for c in got.get("status", {}).get("conditions", [])}
            return conditions.get("Ready") == "True"

        self._wait(ready, 60, f"node {name} Ready")
        # no kube-controller-manager runs to lift the not-ready taint that nodes start with
        self.cp.kubectl("taint", "node", name, "node.kubernetes.io/not-ready:NoSchedule-", check=False)

    def stop(self) -> None:
        """End every component."""
        for p in reversed(self.processes.values()):
            end_process(p, 15)
