"""Run a scenario for every policy, side by side, and write the table, the JSON and the plot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dynamic_memory.policy.baselines import VPA, HyperV, Proxmox, Static
from dynamic_memory.policy.engine import DynamicMemory, Policy
from dynamic_memory.sim.cluster import SimResult, simulate
from dynamic_memory.sim.scenarios import DAY, Scenario


def policies(step_s: float) -> list[Policy]:
    """Ours first, then the baselines of peers.md."""
    return [DynamicMemory(), Static(), HyperV(), Proxmox(step_s), VPA()]


def run_all(scenario: Scenario, chosen: Sequence[Policy], *, progress: bool = False) -> dict[str, SimResult]:
    """Each policy over the same scenario."""
    out = {}
    for policy in tqdm(chosen, desc=scenario.name, unit="policy", disable=not progress):
        out[policy.name] = simulate(policy, scenario.nodes, scenario.vms, duration_s=scenario.duration_s,
                                    step_s=scenario.step_s, stale_s=scenario.stale_s,
                                    boot_at_provisioned=policy.name == "static")
    return out


def summarise(scenario: Scenario, results: Mapping[str, SimResult]) -> dict[str, Any]:
    """The JSON report: per-policy figures plus our engine's first decisions in words."""
    static_bytes = sum(vm.provisioned for vm in scenario.vms)
    days = scenario.duration_s / DAY
    rows: list[dict[str, Any]] = [r.summary(len(scenario.vms), days, static_bytes) for r in results.values()]
    if len({vm.params.weight for vm in scenario.vms}) > 1:
        for row, result in zip(rows, results.values(), strict=True):
            row["short_by_weight"] = short_by_weight(scenario, result)
    ours = results.get("dynamic-memory")
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "vms": len(scenario.vms),
        "nodes": len(scenario.nodes),
        "hours": scenario.duration_s / 3600,
        "policies": rows,
        "decisions": ours.reasons[:40] if ours else [],
        "violations": {name: r.violations[:10] for name, r in results.items() if r.violations},
    }


def short_by_weight(scenario: Scenario, result: SimResult) -> dict[str, float]:
    """The share of the time each weight's VMs were short of memory, heaviest first.

    The table's pressure is one figure for every VM; in a pool too small for its VMs, what an
    administrator asks is whom the shortage fell on (Hyper-V's weight: the heavier served first)."""
    tl = result.timeline
    steps: dict[int, list[int]] = {}
    for vm in scenario.vms:
        counted = steps.setdefault(vm.params.weight, [0, 0])
        counted[0] += tl.short_steps(vm.name)
        counted[1] += len(tl.t)
    return {str(w): round(short / max(total, 1), 5) for w, (short, total) in sorted(steps.items(), reverse=True)}


def weight_table(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """`short_by_weight` of each policy as a table (None for a scenario of one weight)."""
    weighted = [row for row in rows if "short_by_weight" in row]
    if not weighted:
        return None
    weights = list(weighted[0]["short_by_weight"])
    cells = [{"policy": row["policy"], **{f"w{w}": row["short_by_weight"][w] for w in weights}} for row in weighted]
    return table(cells, [("policy", "policy", "{}"), *((f"w{w}", f"weight {w}", "{:.4f}") for w in weights)])


COLUMNS = [("policy", "policy", "{}"), ("mean_assigned_gib", "mean GiB", "{:.2f}"),
           ("memory_ratio", "vs static", "{:.3f}"), ("pressure_fraction", "pressure", "{:.4f}"),
           ("resizes_per_vm_day", "resizes/VM/day", "{:.2f}"),
           ("migrated_gib_per_vm_day", "migrated GiB/VM/day", "{:.1f}"), ("failed_migrations", "no landing", "{}"),
           ("node_over_capacity_steps", "over room", "{}"), ("kubevirt_violations", "KubeVirt refusals", "{}"),
           ("warnings", "warnings", "{}")]


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """A Markdown table, readable in a terminal and pasteable into the README."""
    head = [title for _, title, _ in columns]
    body = [[_cell(row[key], fmt) for key, _, fmt in columns] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
              + " |" for r in body]
    return "\n".join(lines)


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, list):  # warnings: how many; the words are printed under the table
        return f"{len(value)} (see below)" if value else "-"
    return fmt.format(value)


def warning_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The warnings of a table's rows, one line each, naming the policy."""
    return [f"warning: {row['policy']}: {w}" for row in rows for w in row.get("warnings", [])]


def write_report(out_dir: Path, scenario: Scenario, results: Mapping[str, SimResult]) -> dict[str, Any]:
    """Write <scenario>.json and <scenario>.png into out_dir; return the report."""
    from dynamic_memory.sim.plot import plot_scenario

    out_dir.mkdir(parents=True, exist_ok=True)
    report = summarise(scenario, results)
    (out_dir / f"{scenario.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_scenario(out_dir / f"{scenario.name}.png", scenario, results)
    return report
