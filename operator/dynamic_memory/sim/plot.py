"""The demo's picture: what each policy did to a scenario, one panel per policy, on one y scale.

Top: our engine per VM (weights in the legend where they differ). Below: every policy's totals
per node, the node's room, and red marks where a VM was short of memory, the risk an
administrator cares about most. A caption says what "room" is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from dynamic_memory.quantity import GIB
from dynamic_memory.sim.cluster import SimResult, Timeline
from dynamic_memory.sim.scenarios import Scenario

MAX_VMS_SHOWN = 8
SHORT = "#d62728"
CAPTION = ("Per VM: dashed demand, solid assigned guest memory. Per node: solid the requests of its VMs' pods "
           "(guest + overhead, migration target pods included; every resize moves a VM to another node), dashed the "
           "demand of the VMs on it;\ndotted room = the node's allocatable memory − reserve − other pods' requests. "
           "Red: moments a VM's demand exceeded its assigned memory (it pages or swaps). One y scale for every panel.")


def _short_steps(tl: Timeline, vms: Sequence[str]) -> list[bool]:
    """At each step: is any of these VMs short of memory?"""
    return [any(tl.demand[v][k] > tl.assigned[v][k] for v in vms) for k in range(len(tl.t))]


def _mark_short(ax: Axes, hours: Sequence[float], short: Sequence[bool], top: float, label: str | None) -> None:
    """A red band along the bottom of the panel where `short` holds."""
    if any(short):
        ax.fill_between(hours, 0, top * 0.035, where=list(short), step="post", color=SHORT, lw=0, label=label)


def _grouped(series: Mapping[str, list[int]]) -> list[tuple[list[str], list[int]]]:
    """Nodes whose series are identical, drawn as one line named after all of them (identical lines
    drawn apart would hide each other)."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for node, values in series.items():
        groups.setdefault(tuple(values), []).append(node)
    return [(nodes, list(values)) for values, nodes in groups.items()]


def _per_vm(ax: Axes, scenario: Scenario, result: SimResult, hours: Sequence[float], top: float) -> None:
    tl = result.timeline
    names = list(tl.demand)[:MAX_VMS_SHOWN]
    weights = {vm.name: vm.params.weight for vm in scenario.vms}
    show_weight = len(set(weights.values())) > 1
    for i, (group, assigned) in enumerate(_grouped({vm: tl.assigned[vm] for vm in names})):
        color = f"C{i}"  # VMs of the same size share one line and one color
        label = ", ".join(vm + (f" (weight {weights[vm]})" if show_weight else "") for vm in group)
        ax.step(hours, [a / GIB for a in assigned], where="post", color=color, lw=2.2, alpha=0.75,
                label=label + (" (the same size)" if len(group) > 1 else ""))
        for vm in group:
            ax.plot(hours, [d / GIB for d in tl.demand[vm]], "--", color=color, lw=0.9)
            short = [d > a for d, a in zip(tl.demand[vm], assigned, strict=True)]
            ax.fill_between(hours, [a / GIB for a in assigned], [d / GIB for d in tl.demand[vm]],
                            where=short, step="post", color=SHORT, alpha=0.5, lw=0)
    _mark_short(ax, hours, _short_steps(tl, names), top, "a VM short of memory")
    shown = "" if len(tl.demand) <= MAX_VMS_SHOWN else f" (first {MAX_VMS_SHOWN} of {len(tl.demand)} VMs)"
    ax.set_title(f"{result.policy}, per VM{shown}", fontsize=10, loc="left")


def _per_node(ax: Axes, scenario: Scenario, result: SimResult, hours: Sequence[float], top: float) -> None:
    tl = result.timeline
    nodes = list(tl.node_used)
    color = {n: f"C{j}" for j, n in enumerate(nodes)}
    for kind, values, style in (("pods", tl.node_used, {"lw": 2.2, "alpha": 0.75}),
                                ("demand", None, {"lw": 0.9, "linestyle": "--"}),
                                ("room", tl.node_capacity, {"lw": 1.6, "linestyle": ":"})):
        series = {n: list(values[n]) if values is not None else _node_total(tl, n, tl.demand) for n in nodes}
        for group, ys in _grouped(series):
            shade = color[group[0]] if len(group) == 1 else "dimgray"
            same = " (the same on each)" if len(group) > 1 else ""
            ax.step(hours, [y / GIB for y in ys], where="post", color=shade, label=f"{', '.join(group)}: {kind}{same}",
                    **style)
    short_vm_steps = sum(tl.short_steps(v) for v in tl.demand)
    _mark_short(ax, hours, _short_steps(tl, list(tl.demand)), top, "a VM short of memory")
    share = short_vm_steps / max(1, len(tl.t) * len(tl.demand))
    over = sum(u > c for n in tl.node_used for u, c in zip(tl.node_used[n], tl.node_capacity[n], strict=True))
    over_words = f"; pods over a node's room {over / max(1, len(tl.t) * len(tl.node_used)):.0%} of the time" \
        if over else ""
    ax.set_title(f"{result.policy}: per node; {result.resizes} resizes; VMs short of memory {share:.2%} of the "
                 f"time{over_words}", fontsize=10, loc="left")


def _node_total(tl: Timeline, node: str, series: Mapping[str, list[int]]) -> list[int]:
    """At each step, the sum of `series` over the VMs on `node` then."""
    return [sum(series[v][k] for v in series if tl.node_of[v][k] == node) for k in range(len(tl.t))]


def _highest(scenario: Scenario, tl: Timeline) -> int:
    """The highest value any panel of this run draws: a node's room or pods, its VMs' demand, a VM."""
    out = max((max(v) for v in tl.assigned.values()), default=0)
    for node in tl.node_used:
        out = max(out, *tl.node_capacity[node], *tl.node_used[node], *_node_total(tl, node, tl.demand))
    return out


def _legend_outside(ax: Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) > 14:  # many nodes: the colors and the caption say enough
        keep = [i for i, label in enumerate(labels) if not label.startswith("node-") or i < 9]
        handles, labels = [handles[i] for i in keep], [labels[i] for i in keep]
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def plot_scenario(path: Path, scenario: Scenario, results: Mapping[str, SimResult]) -> None:
    """Write the scenario's PNG."""
    names = list(results)
    ours = results.get("dynamic-memory") or results[names[0]]
    hours = [t / 3600 for t in ours.timeline.t]
    top = 1.08 * max(_highest(scenario, r.timeline) for r in results.values()) / GIB
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(13, 2.5 * (len(names) + 1) + 0.8), sharex=True,
                             sharey=True, layout="constrained")
    fig.suptitle(f"{scenario.name}: {scenario.description}", fontsize=11)
    _per_vm(axes[0], scenario, ours, hours, top)
    for ax, name in zip(axes[1:], names, strict=True):
        _per_node(ax, scenario, results[name], hours, top)
    for ax in axes:
        ax.set_ylabel("GiB")
        ax.set_ylim(0, top)
        ax.grid(True, alpha=0.25)
        _legend_outside(ax)
    axes[-1].set_xlabel("hours")
    fig.text(0.01, 0.0, CAPTION, fontsize=8, va="bottom", ha="left", wrap=True)
    fig.get_layout_engine().set(rect=(0, 0.045, 1, 0.955))  # type: ignore[union-attr, call-arg]
    fig.savefig(path, dpi=90)
    plt.close(fig)
