"""The Kopf handlers wired to a mock API server (kmock), a real Prometheus and the stand-in's metrics.

kmock merges every PATCH and knows no resourceVersion, schema or status subresource: this tier
proves wiring (what is read, what is patched, what is posted), the e2e tier proves behaviour.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
from kopf.testing import KopfRunner

from dynamic_memory.quantity import GIB, parse_quantity
from tests.e2e.guest_metrics import GuestMetrics
from tests.e2e.prometheus import Prometheus, free_port

HANDLERS = Path(__file__).resolve().parents[2] / "operator" / "dynamic_memory" / "handlers.py"
LOGIN = Path(__file__).resolve().parent / "login.py"
DMP = "dynamicmemory.io/v1alpha1/dynamicmemorypolicies"
VMS = "kubevirt.io/v1/virtualmachines"
VMIS = "kubevirt.io/v1/virtualmachineinstances"
MIGRATIONS = "kubevirt.io/v1/virtualmachineinstancemigrations"
KUBEVIRTS = "kubevirt.io/v1/kubevirts"


@pytest.fixture
def cluster(kmock: kmock.KubernetesEmulator, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> kmock.KubernetesEmulator:
    """kmock with our CRD and KubeVirt's resources declared, and the operator's environment set."""
    kmock.resources.load_bundled()
    kmock.resources[DMP] = kmock_resource("DynamicMemoryPolicy", namespaced=True)
    kmock.resources[VMS] = kmock_resource("VirtualMachine", namespaced=True)
    kmock.resources[VMIS] = kmock_resource("VirtualMachineInstance", namespaced=True)
    kmock.resources[MIGRATIONS] = kmock_resource("VirtualMachineInstanceMigration", namespaced=True)
    kmock.resources[KUBEVIRTS] = kmock_resource("KubeVirt", namespaced=True)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""
kind: Config
current-context: self
clusters: [{{name: self, cluster: {{server: "{kmock.url!s}"}}}}]
contexts: [{{name: self, context: {{cluster: self}}}}]
""")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("DM_TEST_API_URL", str(kmock.url))
    monkeypatch.setenv("DM_METRICS_PORT", "0")
    for node in ("node-1", "node-2"):  # every resize migrates the VM to another node
        kmock.objects["v1/nodes", None, node] = {
            "metadata": {"name": node, "uid": node, "resourceVersion": "1"},
            "status": {"allocatable": {"memory": "64Gi"}}}
    return kmock


def kmock_resource(kind: str, namespaced: bool) -> kmock.ResourceInfo:
    return kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs={"list", "watch", "fetch", "patch", "create"})


def policy(ns: str, name: str = "dmp", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "dynamicmemory.io/v1alpha1", "kind": "DynamicMemoryPolicy",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "generation": 1,
                         "resourceVersion": "1"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, "startup": "2Gi", "maximum": "16Gi",
                     "interval": "5s", **spec}}


def running_vm(cluster: kmock.KubernetesEmulator, ns: str, name: str, guest: str = "2Gi",
               annotations: dict[str, str] | None = None) -> None:
    cluster.objects[VMS, ns, name] = {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns, "uid": f"vm-{name}", "labels": {"app": "db"},
                     "resourceVersion": "1", "annotations": annotations or {}},
        "spec": {"running": True, "template": {"spec": {"domain": {"memory": {"guest": guest, "maxGuest": "16Gi"}}}}}}
    cluster.objects[VMIS, ns, name] = {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": ns, "uid": f"vmi-{name}", "resourceVersion": "1"},
        "spec": {"domain": {"memory": {"guest": guest, "maxGuest": "16Gi"}}},
        "status": {"phase": "Running", "nodeName": "node-1", "conditions": [
            {"type": "LiveMigratable", "status": "True"}],
            "memory": {"guestAtBoot": "2Gi", "guestCurrent": guest, "guestRequested": guest,
                       "memoryOverhead": "300Mi"}}}


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch, prometheus: Prometheus) -> Iterator[None]:
    monkeypatch.setenv("DM_PROMETHEUS_URL", prometheus.url)
    yield


def runner() -> KopfRunner:
    return KopfRunner(["run", "-A", "--standalone", str(HANDLERS), str(LOGIN)], registry=kopf.OperatorRegistry())


async def wait_for(check: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError("condition not met in time")


def guest_of(cluster: kmock.KubernetesEmulator, ns: str, name: str) -> int:
    vm = cluster.objects[VMS, ns, name]
    return parse_quantity(vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"])


def events(cluster: kmock.KubernetesEmulator, reason: str) -> list[Any]:
    found = []
    for key in list(cluster.objects.keys()):
        if "events" in str(key[0]):
            obj = cluster.objects[key]
            if obj.get("reason") == reason:
                found.append(obj)
    return found


async def test_invalid_policy_gets_a_condition_and_an_event(cluster: kmock.KubernetesEmulator,
                                                             operator_env: None) -> None:
    cluster.objects[DMP, "bad", "dmp"] = policy("bad", minimum="8Gi", startup="2Gi")
    with runner() as run:
        await wait_for(lambda: (cluster.objects[DMP, "bad", "dmp"].get("status") or {}).get("conditions"))
        await wait_for(lambda: events(cluster, "InvalidSpec"))
    conditions = cluster.objects[DMP, "bad", "dmp"]["status"]["conditions"]
    ready = next(c for c in conditions if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.minimum: 8Gi must not be larger than startup 2Gi" in ready["message"]
    assert run.exception is None


PAGING = "×2 (paging: demand above its size is unseen) "
"""A paging guest's buffer is doubled from its first grow; a pass that saw the use before the faults
grows it with the plain buffer."""


def buffer_of(reason: str) -> str:
    """The buffer's words of a sizing: from after "20% buffer " to the arrow."""
    return reason.split("% buffer ", 1)[1].split(" →", 1)[0]


async def test_demand_rise_patches_the_vm_with_its_reason(cluster: kmock.KubernetesEmulator, operator_env: None,
                                                          guest_metrics: GuestMetrics, prometheus: Prometheus) -> None:
    # a 2Gi guest with no headroom left, paging: short of memory, as KubeVirt's alert defines it
    guest_metrics.set("grow", "db", available=2 * GIB, demand=2 * GIB - 50 * 2**20, major_faults_per_s=500)
    prometheus.wait_for('kubevirt_vmi_memory_available_bytes{namespace="grow"}')
    cluster.objects[DMP, "grow", "dmp"] = policy("grow")
    running_vm(cluster, "grow", "db")
    with runner() as run:
        await wait_for(lambda: guest_of(cluster, "grow", "db") > 2 * GIB)
        await wait_for(lambda: events(cluster, "Resized"))
    vm = cluster.objects[VMS, "grow", "db"]
    # demand (2Gi - 50Mi) + at least 1Gi of buffer; more if the faults' rate was in by the first pass.
    # Patched once: after it, the VM's spec differs from the VMI's guestCurrent, so it counts as busy.
    assert guest_of(cluster, "grow", "db") >= 2 * GIB - 50 * 2**20 + GIB
    annotations = vm["metadata"]["annotations"]
    assert buffer_of(annotations["dynamicmemory.io/reason"]) in ("(at least 1Gi)", PAGING + "(at least 2Gi)")
    assert len(events(cluster, "Resized")) == 1
    assert annotations["dynamicmemory.io/original-memory"] == '{"guest":"2Gi","maxGuest":"16Gi"}'
    status = cluster.objects[DMP, "grow", "dmp"]["status"]
    assert status["vms"] == 1 and status["running"] == 1
    assert run.exception is None


async def test_a_time_of_day_policy_reads_its_past_days_and_still_follows_demand(
        cluster: kmock.KubernetesEmulator, operator_env: None, guest_metrics: GuestMetrics,
        prometheus: Prometheus) -> None:
    # no past days in this Prometheus: the hourly peaks read at start are empty, demand sizes the VM
    guest_metrics.set("time-of-day", "db", available=2 * GIB, demand=2 * GIB - 50 * 2**20, major_faults_per_s=500)
    prometheus.wait_for('kubevirt_vmi_memory_available_bytes{namespace="time-of-day", name="db"}')
    cluster.objects[DMP, "time-of-day", "dmp"] = policy("time-of-day", timeOfDay=True, minimumBuffer="512Mi")
    running_vm(cluster, "time-of-day", "db")
    with runner() as run:
        await wait_for(lambda: guest_of(cluster, "time-of-day", "db") > 2 * GIB)
    # demand (2Gi - 50Mi) + at least 512Mi of buffer (doubled once the faults show)
    assert guest_of(cluster, "time-of-day", "db") >= 2 * GIB - 50 * 2**20 + 512 * 2**20
    reason = cluster.objects[VMS, "time-of-day", "db"]["metadata"]["annotations"]["dynamicmemory.io/reason"]
    assert buffer_of(reason) in ("(at least 512Mi)", PAGING + "(at least 1Gi)"), reason
    conditions = cluster.objects[DMP, "time-of-day", "dmp"]["status"]["conditions"]
    assert {c["type"]: c["status"] for c in conditions}["Ready"] == "True"
    assert run.exception is None


async def test_recommend_mode_patches_no_size(cluster: kmock.KubernetesEmulator, operator_env: None,
                                              guest_metrics: GuestMetrics, prometheus: Prometheus) -> None:
    guest_metrics.set("recommend", "db", available=2 * GIB, demand=2 * GIB - 50 * 2**20, major_faults_per_s=500)
    prometheus.wait_for('kubevirt_vmi_memory_available_bytes{namespace="recommend"}')
    cluster.objects[DMP, "recommend", "dmp"] = policy("recommend", mode="Recommend")
    running_vm(cluster, "recommend", "db")
    with runner():
        await wait_for(lambda: "dynamicmemory.io/recommendation" in
                       (cluster.objects[VMS, "recommend", "db"]["metadata"].get("annotations") or {}))
    assert guest_of(cluster, "recommend", "db") == 2 * GIB


async def test_prometheus_down_holds_every_vm(cluster: kmock.KubernetesEmulator,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DM_PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    cluster.objects[DMP, "down", "dmp"] = policy("down")
    running_vm(cluster, "down", "db", guest="8Gi")

    def metrics_condition() -> dict[str, Any] | None:
        conds = (cluster.objects[DMP, "down", "dmp"].get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == "MetricsAvailable"), None)

    with runner():
        await wait_for(metrics_condition)
    cond = metrics_condition()
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "PrometheusUnreachable")
    assert guest_of(cluster, "down", "db") == 8 * GIB


async def test_a_learning_policy_sizes_a_vm_with_what_it_learnt_and_keeps_its_days(
        cluster: kmock.KubernetesEmulator, operator_env: None, guest_metrics: GuestMetrics,
        prometheus: Prometheus) -> None:
    # the VM comes with three past days learnt (as a restarted operator finds them): on each, the
    # first candidate (minimumBuffer 128Mi, window 2h) cost 100 and the five others 500
    today = int(time.time() // 86400)
    kept = {day_iso(today - k): [[100.0, 0, 0]] + [[500.0, 0, 0]] * 5 for k in (1, 2, 3)}
    guest_metrics.set("learn", "db", available=2 * GIB, demand=2 * GIB - 50 * 2**20, major_faults_per_s=500)
    prometheus.wait_for('kubevirt_vmi_memory_available_bytes{namespace="learn", name="db"}')
    cluster.objects[DMP, "learn", "dmp"] = policy("learn", learnPerVM=True)
    running_vm(cluster, "learn", "db", annotations={"dynamicmemory.io/learned-costs": json.dumps(kept)})
    with runner() as run:
        await wait_for(lambda: guest_of(cluster, "learn", "db") > 2 * GIB)
        await wait_for(lambda: "dynamicmemory.io/learned-setting" in cluster.objects[VMS, "learn", "db"]["metadata"][
            "annotations"])
        await wait_for(lambda: "; 1 sized with a setting learnt from their past days" in ready_message(
            cluster, "learn"))
    assert ready_message(cluster, "learn").startswith("1 running of 1 selected VMs decided; 1 sized with a setting")
    annotations = cluster.objects[VMS, "learn", "db"]["metadata"]["annotations"]
    # demand (2Gi - 50Mi) + 20 %, above the learnt 128Mi: below the 2.95Gi that the policy's own buffer
    # of at least 1Gi gives; or, once it shows it pages, 2Gi + 10 % + 40 % (the buffer doubled, above
    # 256Mi): below the 4.2Gi of the policy's own 1Gi doubled
    grown, reason = guest_of(cluster, "learn", "db"), annotations["dynamicmemory.io/reason"]
    if PAGING in reason:
        assert buffer_of(reason) == PAGING + "(at least 256Mi)" and 2 * GIB < grown < 2.2 * GIB + 2 * GIB, reason
    else:
        assert buffer_of(reason) == "(at least 128Mi)" and 2 * GIB < grown < 2 * GIB - 50 * 2**20 + GIB, reason
    assert annotations["dynamicmemory.io/learned-setting"].startswith(
        "minimumBuffer 128Mi, scaleDown.stabilizationWindow 2h: of 6 candidates, the one that would have cost "
        "least on its past 3 days with metrics")
    # the days it came with are kept as they were; the other eleven of the last fourteen were read from
    # Prometheus, which holds no sample of them (it started minutes ago): each costs nothing
    learnt = json.loads(annotations["dynamicmemory.io/learned-costs"])
    assert {day: learnt[day] for day in kept} == kept
    assert sorted(learnt) == [day_iso(today - k) for k in range(14, 0, -1)]
    assert all(learnt[day] == [[0.0, 0, 0]] * 6 for day in learnt if day not in kept)
    assert run.exception is None


async def test_a_knob_the_policy_sets_is_kept_and_only_the_other_is_learnt(
        cluster: kmock.KubernetesEmulator, operator_env: None, guest_metrics: GuestMetrics,
        prometheus: Prometheus) -> None:
    # the same three past days as above, on a policy that sets minimumBuffer (learnPerVM is on by
    # default): the cheapest candidate's window (2h) is taken, its buffer is the policy's 2Gi
    today = int(time.time() // 86400)
    kept = {day_iso(today - k): [[100.0, 0, 0]] + [[500.0, 0, 0]] * 5 for k in (1, 2, 3)}
    for ns, spec in (("pinned", {"minimumBuffer": "2Gi"}),
                     ("both", {"minimumBuffer": "2Gi", "scaleDown": {"stabilizationWindow": "8h"}})):
        guest_metrics.set(ns, "db", available=2 * GIB, demand=2 * GIB - 50 * 2**20)
        prometheus.wait_for(f'kubevirt_vmi_memory_available_bytes{{namespace="{ns}", name="db"}}')
        cluster.objects[DMP, ns, "dmp"] = policy(ns, **spec)
        running_vm(cluster, ns, "db", annotations={"dynamicmemory.io/learned-costs": json.dumps(kept)})
    with runner() as run:
        await wait_for(lambda: all(guest_of(cluster, ns, "db") > 2 * GIB for ns in ("pinned", "both")))
        await wait_for(lambda: "dynamicmemory.io/learned-setting" in cluster.objects[
            VMS, "pinned", "db"]["metadata"]["annotations"])
    pinned = cluster.objects[VMS, "pinned", "db"]["metadata"]["annotations"]
    assert pinned["dynamicmemory.io/learned-setting"].startswith(
        "minimumBuffer 2Gi, scaleDown.stabilizationWindow 2h: of 6 candidates, the one that would have cost "
        "least on its past 3 days with metrics"), pinned
    assert "(at least 2Gi)" in buffer_of(pinned["dynamicmemory.io/reason"]), pinned
    # both set: nothing to learn, nothing written about it, sized with the policy's own
    both = cluster.objects[VMS, "both", "db"]["metadata"]["annotations"]
    assert "dynamicmemory.io/learned-setting" not in both, both
    assert "(at least 2Gi)" in buffer_of(both["dynamicmemory.io/reason"]), both
    assert "sized with a setting learnt" not in ready_message(cluster, "both")
    assert run.exception is None


def ready_message(cluster: kmock.KubernetesEmulator, ns: str) -> str:
    conditions = (cluster.objects[DMP, ns, "dmp"].get("status") or {}).get("conditions") or []
    return next((str(c["message"]) for c in conditions if c["type"] == "Ready"), "")


def day_iso(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).date().isoformat()


async def test_a_learning_policy_learns_a_vms_past_days_from_prometheus(
        cluster: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a Prometheus of its own, holding four past days of the VM: 8Gi available, 5Gi usable (3Gi of
    # demand), a sample a minute, up to half an hour before midnight UTC today (a gap at the end)
    today = int(time.time() // 86400)
    series = '{namespace="learn-past",name="db"}'
    minutes = range((today - 4) * 86400, today * 86400 - 1800 + 1, 60)
    lines = ["# TYPE kubevirt_vmi_memory_available_bytes gauge"]
    lines += [f"kubevirt_vmi_memory_available_bytes{series} {8 * GIB} {t}" for t in minutes]
    lines += ["# TYPE kubevirt_vmi_memory_usable_bytes gauge"]
    lines += [f"kubevirt_vmi_memory_usable_bytes{series} {5 * GIB} {t}" for t in minutes]
    (tmp_path / "past").mkdir()
    past = Prometheus(tmp_path / "past", [])
    past.backfill("\n".join(lines) + "\n# EOF\n")
    monkeypatch.setenv("DM_PROMETHEUS_URL", past.url)
    cluster.objects[DMP, "learn-past", "dmp"] = policy("learn-past", learnPerVM=True)
    running_vm(cluster, "learn-past", "db")
    try:
        with runner() as run:
            await wait_for(lambda: "dynamicmemory.io/learned-costs" in cluster.objects[
                VMS, "learn-past", "db"]["metadata"]["annotations"])
    finally:
        past.stop()
    annotations = cluster.objects[VMS, "learn-past", "db"]["metadata"]["annotations"]
    learnt = json.loads(annotations["dynamicmemory.io/learned-costs"])
    assert sorted(learnt) == [day_iso(today - k) for k in range(14, 0, -1)]
    assert all(learnt[day_iso(today - k)] == [[0.0, 0, 0]] * 6 for k in range(5, 15))  # before the data
    # a day with the whole day before it: every candidate holds 3Gi + its buffer at each of the
    # day's 288 five-minute samples (20 % above 128Mi: 3686.4Mi, 3688Mi in 2Mi blocks; or its
    # minimum of 1, 1, 2, 4Gi), never short, never resized
    steady = [3688 / 1024, 3688 / 1024, 4, 4, 5, 7]
    for k in (2, 3):
        assert learnt[day_iso(today - k)] == [[round(size * 288, 1), 0, 0] for size in steady]
    # yesterday ends in the gap: Prometheus looks back 5 minutes for a sample, so the steps up to
    # 23:40 still see the one at 23:30 and those of 23:45 to 23:55 see none; the day is learnt from
    # its 285 samples all the same
    assert learnt[day_iso(today - 1)] == [[round(size * 285, 1), 0, 0] for size in steady]
    # the first day, with nothing before it: the VM's ceiling (16Gi) while the metrics span less than
    # minHistory (2 h: 24 samples), then one shrink to the same sizes
    assert learnt[day_iso(today - 4)] == [[round(16 * 24 + size * 264, 1), 0, 1] for size in steady]
    # four days with metrics: the two 128Mi candidates cost the same, and the first is taken
    assert annotations["dynamicmemory.io/learned-setting"] == (
        "minimumBuffer 128Mi, scaleDown.stabilizationWindow 2h: of 6 candidates, the one that would have cost "
        "least on its past 4 days with metrics")
    assert run.exception is None
