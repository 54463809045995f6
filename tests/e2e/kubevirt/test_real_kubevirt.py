"""What only KubeVirt's own controllers can show: virt-api's refusals, virt-controller's
RestartRequired, and a grow carried out the way KubeVirt carries it out (the VMI's new guest,
HotMemoryChange, a VirtualMachineInstanceMigration, a target pod placed by the real scheduler on
another node, the VMI reporting its new size there)."""

from __future__ import annotations

import json

import yaml

from dynamic_memory.quantity import GIB, parse_quantity
from tests.e2e.conftest import Operator
from tests.e2e.controlplane.cluster import ControlPlane
from tests.e2e.kubevirt.conftest import apply, condition, get, namespace, running_vmi, vm_manifest, wait_for
from tests.e2e.kubevirt.handler import VirtHandler
from tests.e2e.kubevirt.rig import KubeVirtRig


def test_virt_api_refuses_a_guest_that_is_not_2mi_aligned(kv_cluster: ControlPlane, kv_rig: KubeVirtRig) -> None:
    ns = namespace(kv_cluster, "kv-refuse")
    apply(kv_cluster, vm_manifest("aligned", ns))
    out = kv_cluster.kubectl("patch", "vm", "aligned", "-n", ns, "--type=merge", "-p",
                             json.dumps({"spec": {"template": {"spec": {"domain": {"memory": {"guest": "2047Mi"}}}}}}),
                             check=False)
    assert out.returncode != 0
    # virt-api's validating webhook (KubeVirt's own words; a 422 "The request is invalid")
    assert "The request is invalid: spec.template.spec.domain.memory.guest: Guest memory must be 2Mi aligned" \
        in out.stderr, out.stderr


def test_a_hand_made_patch_below_the_boot_size_gets_restart_required(
        kv_cluster: ControlPlane, kv_rig: KubeVirtRig, virt_handler: VirtHandler) -> None:
    ns = namespace(kv_cluster, "kv-floor")
    apply(kv_cluster, vm_manifest("floor", ns, guest="4Gi"))
    vmi = running_vmi(kv_cluster, "floor", ns)
    assert vmi["status"]["memory"]["guestAtBoot"] == "4Gi"
    kv_cluster.kubectl("patch", "vm", "floor", "-n", ns, "--type=merge", "-p",
                       json.dumps({"spec": {"template": {"spec": {"domain": {"memory": {"guest": "2Gi"}}}}}}))
    restart = wait_for("RestartRequired on the VM", lambda: condition(get(kv_cluster, "vm", "floor", ns),
                                                                      "RestartRequired"))
    assert restart["status"] == "True"


def test_a_grow_is_a_migration_to_another_node(kv_cluster: ControlPlane, kv_rig: KubeVirtRig,
                                               virt_handler: VirtHandler, kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "kv-grow")
    policy = {"apiVersion": "dynamicmemory.io/v1alpha1", "kind": "DynamicMemoryPolicy",
              "metadata": {"name": "grow", "namespace": ns},
              "spec": {"selector": {"matchLabels": {"app": "grow"}}, "startup": "2Gi", "maximum": "8Gi",
                       "interval": "2s"}}
    kv_cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(policy))
    virt_handler.set_demand(ns, "grower", GIB)
    apply(kv_cluster, vm_manifest("grower", ns, labels={"app": "grow"}))
    before = running_vmi(kv_cluster, "grower", ns)
    source_node = before["status"]["nodeName"]
    virt_handler.settings.migration_s = 2.0
    virt_handler.set_demand(ns, "grower", 2 * GIB, short=True)  # the guest runs short: it pages

    def grown() -> str | None:
        guest = get(kv_cluster, "vm", "grower", ns)["spec"]["template"]["spec"]["domain"]["memory"]["guest"]
        return guest if parse_quantity(guest) > 2 * GIB else None
    wanted = wait_for("the operator's patch of the VM", grown, 60)
    # virt-controller hands the change to the VMI and marks it for a live migration
    wait_for("HotMemoryChange on the VMI", lambda: condition(get(kv_cluster, "vmi", "grower", ns), "HotMemoryChange"),
             30, 0.2)
    migrations = wait_for("the workload updater's migration", lambda: json.loads(kv_cluster.kubectl(
        "get", "vmim", "-n", ns, "-o", "json").stdout)["items"], 60)
    assert migrations[0]["spec"]["vmiName"] == "grower"

    def landed() -> dict[str, object] | None:
        vmi = get(kv_cluster, "vmi", "grower", ns)
        memory = vmi.get("status", {}).get("memory", {})
        return vmi if memory.get("guestCurrent") == wanted and not condition(vmi, "HotMemoryChange") else None
    after = wait_for("the VMI at its new size", landed, 90)
    status = after["status"]
    assert isinstance(status, dict)
    assert status["nodeName"] != source_node  # the target pod's anti-affinity: always another node
    assert status["memory"]["guestRequested"] == wanted
    done = json.loads(kv_cluster.kubectl("get", "vmim", "-n", ns, "-o", "json").stdout)["items"]
    assert [m["status"]["phase"] for m in done] == ["Succeeded"]
