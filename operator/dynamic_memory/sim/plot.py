"""The demo's picture: demand, assigned memory and node room over time, one panel per policy."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dynamic_memory.quantity import GIB
from dynamic_memory.sim.cluster import SimResult
from dynamic_memory.sim.scenarios import Scenario


def plot_scenario(path: Path, scenario: Scenario, results: Mapping[str, SimResult]) -> None:
    """Top: our engine per VM (demand dashed, assigned solid). Below: each policy's totals per node."""
    names = list(results)
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(11, 2.6 * (len(names) + 1)), sharex=True)
    ours = results.get("dynamic-memory") or results[names[0]]
    hours = [t / 3600 for t in ours.timeline.t]
    ax = axes[0]
    for i, vm in enumerate(list(ours.timeline.demand)[:8]):
        color = f"C{i}"
        ax.plot(hours, [d / GIB for d in ours.timeline.demand[vm]], "--", color=color, lw=0.8)
        ax.step(hours, [a / GIB for a in ours.timeline.assigned[vm]], where="post", color=color, lw=1.4, label=vm)
    ax.set_title(f"{scenario.name}: {ours.policy}, per VM (dashed: demand, solid: assigned)", fontsize=10)
    ax.set_ylabel("GiB")
    ax.legend(fontsize=7, ncol=4, loc="upper left")

    for ax, name in zip(axes[1:], names, strict=True):
        tl = results[name].timeline
        for j, node in enumerate(tl.node_used):
            vms = [vm.name for vm in scenario.vms if vm.node == node]
            demand = [sum(tl.demand[v][k] for v in vms) / GIB for k in range(len(tl.t))]
            assigned = [sum(tl.assigned[v][k] for v in vms) / GIB for k in range(len(tl.t))]
            color = f"C{j}"
            ax.plot(hours, demand, "--", color=color, lw=0.8, label=f"{node} demand")
            ax.step(hours, assigned, where="post", color=color, lw=1.4, label=f"{node} assigned")
            ax.plot(hours, [c / GIB for c in tl.node_capacity[node]], ":", color=color, lw=1.2,
                    label=f"{node} room")
        ax.set_title(f"{name}: per node, guest memory (resizes: {results[name].resizes})", fontsize=10)
        ax.set_ylabel("GiB")
        ax.set_ylim(bottom=0)
        if len(tl.node_used) <= 3:
            ax.legend(fontsize=7, ncol=3, loc="upper left")
    axes[-1].set_xlabel("hours")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
