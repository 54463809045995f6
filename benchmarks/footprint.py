"""Operator footprint and API cost with 1,000 VMs at a 10 s interval, on the e2e control plane.

1,000 VMs in 10 namespaces (one policy each), steady demand, on KubeVirt's own controllers. Once
every VM is decided, our virt-handler is paused (so its polling does not count) and the operator process is
watched: resident memory every second, CPU from /proc over the whole span, requests by verb
from the API server's apiserver_request_total (and, by user, from its audit log). Then 10 VMs'
demand rises and the writes are counted again: one patch per VM whose target changed.

The operator runs on the allocator its image sets (deploy/Dockerfile's LD_PRELOAD, PYTHONMALLOC
and MALLOC_CONF): resident memory is the allocator's as much as the operator's.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import median, say
from benchmarks.world import World, wait, world
from tests.e2e.units import GIB, MIB

VMS, NAMESPACES, INTERVAL_S, CHANGED = 1000, 10, 10.0, 10
SAMPLE = re.compile(r'^apiserver_request_total\{(.*)\} ([0-9.e+]+)$')


def requests_by_verb(w: World) -> Counter[tuple[str, str]]:
    """apiserver_request_total summed by (verb, resource): every client's requests."""
    out: Counter[tuple[str, str]] = Counter()
    for line in w.cp.get("/metrics", raw=True).decode().splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            out[(labels.get("verb", ""), labels.get("resource", ""))] += int(float(match.group(2)))
    return out


def proc(pid: int) -> tuple[float, int]:
    """(CPU seconds so far, resident bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def delta(after: Counter[tuple[str, str]], before: Counter[tuple[str, str]]) -> dict[str, int]:
    """Requests between two snapshots, as 'VERB resource' → count (the API server's own /metrics GETs left out)."""
    return {f"{verb} {resource}": after[(verb, resource)] - before[(verb, resource)]
            for verb, resource in sorted(after) if after[(verb, resource)] > before[(verb, resource)] and resource}


def resizes(w: World, since: float) -> list[str]:
    """The VMs of the operator's VM patches since `since` that change a VM's spec (a resize), one
    entry per patch: the other patches only annotate a VM held back (KubeVirt's migration limits
    take five at a time)."""
    return [e["objectRef"].get("name", "") for e in w.audit(since) if e["verb"] == "patch"
            and e.get("objectRef", {}).get("resource") == "virtualmachines"
            and "spec" in (e.get("requestObject") or {})]


def settled(w: World, since: float, quiet_s: float, timeout_s: float) -> list[str]:
    """`resizes` once no resize has come for `quiet_s` (a VM that grew too little grows again)."""
    seen, last = -1, time.monotonic()
    deadline = last + timeout_s
    while time.monotonic() < deadline:
        now = resizes(w, since)
        if len(now) != seen:
            seen, last = len(now), time.monotonic()
        elif time.monotonic() - last >= quiet_s:
            return now
        time.sleep(1)
    raise TimeoutError(f"the operator still resized VMs after {timeout_s:.0f} s")


def by_user(w: World, since: float) -> dict[str, int]:
    """The operator's own requests since `since`, from the audit log, as 'verb resource' → count."""
    counts = Counter(f"{e['verb']} {e.get('objectRef', {}).get('resource', '')}" for e in w.audit(since))
    return dict(sorted(counts.items()))


def boot(w: World) -> list[str]:
    """Nodes, policies and VMs; returns the namespaces once every VM runs and Prometheus has it."""
    w.add_nodes("fleet", 20, "128Gi")
    spaces = [f"fleet-{i}" for i in range(NAMESPACES)]
    for ns in spaces:
        w.policy(ns, f"{INTERVAL_S:g}s")
    for j, ns in enumerate(spaces):  # + the 1Gi buffer fits the 2Gi boot size: steady
        w.vms(ns, [f"vm-{i}" for i in range(j, VMS, NAMESPACES)], GIB // 2)
    wait(lambda: w.running() == VMS, 1800, "1,000 VMs running", poll_s=5)
    wait(lambda: w.prometheus.query(f'count(kubevirt_vmi_memory_available_bytes{{namespace=~"fleet-.*"}}) == {VMS}'),
         120, "1,000 VMs in Prometheus", poll_s=1)
    return spaces


def run(quick: bool = False) -> dict[str, Any]:
    """RSS, CPU share and requests per pass at steady state; writes per changed VM."""
    duration = 20.0 if quick else 300.0
    with world(Path(tempfile.mkdtemp(prefix="dm-footprint-")), scrape_s=5.0, handler_period_s=2.0) as w:
        started = time.monotonic()
        spaces = boot(w)
        boot_s = time.monotonic() - started
        say(f"footprint: {VMS:,} VMs running in {boot_s:.0f} s")
        op = w.operator("footprint")  # on the image's allocator, as every e2e operator (checked at its start)
        allocator = op.allocator
        wait(lambda: all(w.status(ns).get("running") == VMS // NAMESPACES for ns in spaces), 120,
             "every VM decided", poll_s=1)
        time.sleep(INTERVAL_S)
        w.handler.settings.paused = True
        try:
            pid = op.process.pid
            api0, cpu0, t0 = requests_by_verb(w), proc(pid)[0], time.time()
            passes0 = op.metric("dynamic_memory_cycle_seconds_count")
            rss = []
            while time.time() - t0 < duration:
                rss.append(proc(pid)[1])
                time.sleep(1)
            api1, cpu1, t1 = requests_by_verb(w), proc(pid)[0], time.time()
            passes = op.metric("dynamic_memory_cycle_seconds_count") - passes0
            steady, steady_user = delta(api1, api0), by_user(w, t0)
            # demand rises on CHANGED VMs (as virt-handler shows it): resize patches, nothing else per VM.
            # A guest shows demand only up to its size (used bytes, and paging): a 2Gi VM asking for 3Gi
            # pages, and is grown to 4.2Gi, 2Gi + 10 % + the 1Gi buffer doubled (what a paging guest wants
            # above its size is unseen), which holds its 3Gi and their buffer. KubeVirt migrates a few at
            # a time, so virt-handler carries the migrations out again
            w.handler.settings.paused = False
            changed = [(spaces[i % NAMESPACES], f"vm-{i}") for i in range(0, VMS, VMS // CHANGED)]
            t2 = time.time()
            for ns, name in changed:
                w.handler.set_demand(ns, name, 3 * GIB)
            # KubeVirt migrates a few at a time (seen: 4 at once, then one every ~30 s on a loaded machine);
            # counted once three passes in a row sent none
            done = settled(w, t2, 3 * INTERVAL_S, 60 * INTERVAL_S)
            change_user = by_user(w, t2)
            pass_s = op.metric("dynamic_memory_cycle_seconds_sum") / max(1.0, op.metric(
                "dynamic_memory_cycle_seconds_count"))
        finally:
            w.handler.settings.paused = False
    cpu_share = (cpu1 - cpu0) / (t1 - t0)
    per_pass = {k: v / passes for k, v in steady.items()} if passes else {}
    lists = sum(v for k, v in steady_user.items() if k.startswith("list "))
    vm_patches = change_user.get("patch virtualmachines", 0)
    grown = Counter(Counter(done).values())  # resizes a VM → VMs
    result = {"vms": VMS, "policies": NAMESPACES, "interval_s": INTERVAL_S, "duration_s": t1 - t0, "passes": passes,
              "allocator": allocator,
              "boot_s": boot_s, "mean_pass_s": pass_s,
              "rss_mib_max": max(rss) / MIB, "rss_mib_median": median(rss) / MIB, "cpu_share": cpu_share,
              "operator_rss_mib": max(rss) / MIB, "operator_cpu_share": cpu_share,
              "steady_requests_all_clients": steady, "steady_requests_per_pass_all_clients": per_pass,
              "steady_requests_by_operator": steady_user, "api_list_per_cycle": lists / passes if passes else None,
              "changed_vms": CHANGED, "requests_by_operator_after_change": change_user,
              "api_writes_per_changed_vm": vm_patches / CHANGED, "vm_patches_after_change": vm_patches,
              "resizes_after_change": len(done), "vms_by_resizes": {str(k): v for k, v in sorted(grown.items())},
              "targets": {"operator_rss_mib": "<= 150", "operator_cpu_share": "<= 0.10", "api_list_per_cycle": "0",
                          "api_writes_per_changed_vm": "1 (one VM patch per VM whose demand rose)"}}
    say(f"footprint: {passes:.0f} passes in {t1 - t0:.0f} s on {allocator['LD_PRELOAD']} "
        f"(PYTHONMALLOC={allocator['PYTHONMALLOC']}): RSS max {result['rss_mib_max']:.0f} MiB (target ≤ 150), "
        f"CPU {cpu_share:.1%} of a core (target ≤ 10%), a pass {pass_s * 1000:.0f} ms")
    say(f"api: steady state, all clients: {steady or 'no requests'}; the operator's: {steady_user or 'none'}")
    say(f"api: {CHANGED} VMs' demand rose: the operator sent {change_user}: {len(done)} resizes "
        f"({result['api_writes_per_changed_vm']:.1f} VM patches per changed VM; VMs by their resizes: "
        f"{dict(sorted(grown.items()))}); "
        + (f"{vm_patches - len(done)} other VM patches, annotations only (a VM held while KubeVirt's migration "
           "slots are taken, or its learnt days)" if vm_patches > len(done) else "no other VM patch"))
    return result

