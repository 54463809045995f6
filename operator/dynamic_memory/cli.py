"""`dynamic-memory`: check policies, see what one would do to your VMs, simulate, replay traces,
generate the CRD, and run the operator.

Bad input of any kind ends in a few lines naming the file, line, field or flag, and exit 2 (or 1
for `check` and `recommend` when what they report is the problem); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynamic_memory.errors import UserError
from dynamic_memory.model import Learn, PolicyParams
from dynamic_memory.quantity import GIB, format_bytes, format_duration, parse_duration

if TYPE_CHECKING:
    from dynamic_memory.policy.engine import Policy
    from dynamic_memory.policy_files import PolicyDocument
    from dynamic_memory.sim.traces import VMTrace

POLICY_NAMES = ("dynamic-memory", "static", "hyperv", "proxmox", "vpa")
SCENARIO_NAMES = ("steady", "diurnal", "burst", "small-node")
"""The simulator's named scenarios (sim/scenarios.py's SCENARIOS), spelled here so that building the
parser imports no simulator: `dynamic-memory run` would load numpy with it (11 MiB resident)."""
BUFFER_RANGE = (5, 2000)


# --- argument types: each says the allowed range instead of listing it -------------------------

def _ranged(kind: Callable[[str], float], low: float, high: float | None, what: str) -> Callable[[str], Any]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (high is not None and value > high):
            bounds = f" from {low:g} to {high:g}" if high is not None else f", at least {low:g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what}{bounds}")
        return value
    return parse


BUFFER = _ranged(int, *BUFFER_RANGE, "a whole percent")
VM_COUNT = _ranged(int, 1, None, "a whole number of VMs")
DAYS = _ranged(float, 0.01, 3650, "a number of days")
BUDGET = _ranged(float, 0, 288, "own resizes per VM-day")


def day_range(text: str) -> tuple[float, float | None]:
    """FROM:TO in days after a trace's first sample (TO may be left out: to the end)."""
    start, sep, end = text.partition(":")
    try:
        lo, hi = float(start or 0), float(end) if end else None
    except ValueError:
        lo = hi = -1.0
    if not sep or lo < 0 or (hi is not None and hi <= lo):
        raise argparse.ArgumentTypeError(f"{text!r}: give FROM:TO in days after the trace's first sample, "
                                         "FROM < TO (e.g. 0:15, or 15: for the rest)")
    return lo, hi


def _out_dir(path: str) -> Path:
    """A folder we can write to, made if needed."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".dynamic-memory-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {path}: cannot write there ({exc.strerror}); choose a folder you can write to"
                        ) from None
    return out


def _policy_doc(path: str | None) -> PolicyDocument | None:
    from dynamic_memory.policy_files import load_policy

    return load_policy(path) if path else None


# --- commands --------------------------------------------------------------------------------

def cmd_crd(args: argparse.Namespace) -> int:
    """Print or write the CRD generated from the API models."""
    from dynamic_memory.crd import crd_yaml

    text = crd_yaml()
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise UserError(f"{args.output}: cannot write it ({exc.strerror})") from None
    else:
        sys.stdout.write(text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate policy files with the API's own rules; every problem as FILE:LINE: field: message."""
    from dynamic_memory.policy_files import read_policy_file

    bad = False
    for path in args.files:
        try:
            report = read_policy_file(path)
        except UserError as exc:
            print(exc)
            bad = True
            continue
        for problem in report.problems:
            print(problem)
        bad = bad or bool(report.problems)
        for doc in report.policies:
            if not doc.problems:
                where = f"{doc.namespace}/{doc.name}" if doc.namespace else doc.name
                print(f"{path}:{doc.line}: DynamicMemoryPolicy {where} is valid")
        if not report.policies and not report.problems:
            print(f"{path}: holds no DynamicMemoryPolicy" + (f" (only {', '.join(report.other_kinds)})"
                                                            if report.other_kinds else ""))
            bad = True
    return 1 if bad else 0


def _print_scenario(report: dict[str, Any], out_dir: Path) -> None:
    from dynamic_memory.sim.report import table, warning_lines, weight_table

    print(f"\n## {report['scenario']}: {report['description']}")
    print(table(report["policies"]))
    for line in warning_lines(report["policies"]):
        print(line)
    by_weight = weight_table(report["policies"])
    if by_weight:
        print("\nshort of memory, by weight (the share of the time each weight's VMs were short):")
        print(by_weight)
    decisions = report["decisions"]
    if decisions:
        print("\nfirst decisions of dynamic-memory:")
        for line in decisions[:6]:
            print("  " + line)
    print(f"\nwrote {out_dir / (str(report['scenario']) + '.png')} and .json")


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run one scenario for the chosen policies; print the table, write the plot and the JSON."""
    from dynamic_memory.sim.report import policies, run_all, write_report
    from dynamic_memory.sim.scenarios import SCENARIOS, from_trace

    doc = _policy_doc(args.policy_file)
    out_dir = _out_dir(args.out)
    if args.scenario == "trace":
        if not args.trace:
            raise UserError("--scenario trace needs --trace FILE (a trace in the shared format, .csv or .csv.gz)")
        scenario = from_trace(args.trace, vms=args.vms, days=args.days)
    else:
        if args.trace:
            raise UserError(f"--trace goes with --scenario trace, not --scenario {args.scenario}")
        scenario = SCENARIOS[args.scenario]()
    params = PolicyParams(startup=GIB, minimum=GIB, maximum=GIB)  # the default knobs
    if doc and doc.spec:
        params = doc.spec.params()
        scenario = scenario.with_policy(params, keep_sizes=args.scenario == "trace")
        print(f"policy: {doc.name} from {args.policy_file}, for every VM"
              + (" (sizes from the trace)" if args.scenario == "trace" else ""))
    if params.learn:
        print(f"learnPerVM is not simulated: every VM keeps minimumBuffer {format_bytes(params.minimum_buffer)} "
              f"and scaleDown.stabilizationWindow {format_duration(params.scale_down.window_s)}, as the operator does "
              "until a VM has learnt 3 days (`dynamic-memory replay TRACE"
              f"{f' --policy-file {args.policy_file}' if doc else ''}` learns them)")
    chosen = [p for p in policies(scenario.step_s) if args.policy in (None, "all", p.name)]
    results = run_all(scenario, chosen, progress=sys.stderr.isatty())
    _print_scenario(write_report(out_dir, scenario, results), out_dir)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Every named scenario, all policies: the tour of what the engine does."""
    from dynamic_memory.sim.report import policies, run_all, write_report
    from dynamic_memory.sim.scenarios import SCENARIOS

    out_dir = _out_dir(args.out)
    print("kubevirt-dynamic-memory demo: the real engine on simulated KubeVirt clusters, beside the baselines")
    for make in SCENARIOS.values():
        scenario = make()
        results = run_all(scenario, policies(scenario.step_s), progress=sys.stderr.isatty())
        _print_scenario(write_report(out_dir, scenario, results), out_dir)
    return 0


def _named_policy(name: str, step_s: float) -> Policy:
    from dynamic_memory.sim.report import policies

    return {p.name: p for p in policies(step_s)}[name]


def _load(args: argparse.Namespace) -> tuple[list[VMTrace], str]:
    """The trace, or the part of it --days asks for, and words that say which."""
    from dynamic_memory.sim.traces import days_of, load_traces, span_days

    traces = load_traces(Path(args.trace))
    if args.days is None:
        return traces, ""
    start, end = args.days
    part = days_of(traces, start, end)
    span = span_days(traces)
    until = f"{span:.1f}" if end is None else f"{end:g}"
    return part, f"days {start:g} to {until} of {span:.1f}, every VM starting over; "


def cmd_optimum(traces: list[VMTrace], part: str, budget: float | None, margin: int, as_json: bool) -> int:
    """The offline optimum at one budget, or its frontier over budgets."""
    from dynamic_memory.sim.optimum import budgets, fleet_optimum, frontier
    from dynamic_memory.sim.report import table

    asked = [budget] if budget is not None else budgets()
    points = [asdict(p) for p in frontier(fleet_optimum(traces, max(asked), margin), asked)]
    if as_json:
        print(json.dumps(points[0] if budget is not None else {"frontier": points}, indent=2))
        return 0
    days = sum(t.days for t in traces)
    print(f"{part}{len(traces)} VMs, {days:.0f} VM-days: the least memory any policy could assign knowing the future, "
          f"never below usage{f' + {margin}%' if margin else ''}, with at most round(budget × days) resizes of its own "
          "per VM, changed on the hour")
    print(table(points, [("budget", "budget (own resizes/VM-day)", "{:g}"), ("memory_ratio", "memory_ratio", "{:.4f}"),
                         ("own_resizes_per_vm_day", "own resizes/VM-day used", "{:.3f}")]))
    return 0


def _knobs(params: PolicyParams) -> str:
    """The knobs a VM may learn, in the policy's words: those learnt, or the values set."""
    buffer = ("learnt per VM" if Learn.MINIMUM_BUFFER in params.learn
              else format_bytes(params.minimum_buffer))
    window = ("learnt per VM" if Learn.DOWN_WINDOW in params.learn
              else format_duration(params.scale_down.window_s))
    return f"minimum buffer {buffer}, scale-down window {window}"


def _learnt_words(params: PolicyParams) -> str:
    """What each VM learns, in words."""
    return " and ".join(words for flag, words in ((Learn.MINIMUM_BUFFER, "minimum buffer"),
                                                  (Learn.DOWN_WINDOW, "scale-down window")) if flag in params.learn)


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a trace file through one policy or all of them."""
    from dynamic_memory.sim.per_vm_setting import replay_per_vm_setting
    from dynamic_memory.sim.replay import SLOT_S, replay, replay_oracle
    from dynamic_memory.sim.report import table

    if args.budget is not None and args.policy != "optimum":
        raise UserError("--budget is the offline optimum's: use it with --policy optimum")
    if args.policy == "optimum":
        if args.policy_file:
            raise UserError("the offline optimum takes no policy file: --buffer PERCENT gives it a margin to keep")
        return cmd_optimum(*_load(args), args.budget, args.buffer or 0, args.json)
    doc = _policy_doc(args.policy_file)
    traces, part = _load(args)
    if doc and doc.spec:
        params = doc.spec.params()
        source = f"policy {doc.name} from {args.policy_file}"
    else:
        params = replace(PolicyParams(startup=0, minimum=0, maximum=2**62), buffer_percent=args.buffer or 20)
        source = f"default policy, buffer {params.buffer_percent}%"
    learns = bool(params.learn)  # our engine then learns each VM's setting, as the operator would
    names = POLICY_NAMES if args.policy == "all" else (args.policy,)
    progress = sys.stderr.isatty() and not args.json

    def replayed(name: str) -> dict[str, Any]:
        if name == "dynamic-memory" and learns:
            return replay_per_vm_setting(traces, params, progress=progress).as_dict()
        return replay(traces, _named_policy(name, SLOT_S), params, progress=progress,
                      workers=os.cpu_count() or 1).as_dict()

    results = [replayed(name) for name in names]
    if args.policy == "all":
        results.append(replay_oracle(traces).as_dict())
    if args.json:
        print(json.dumps({**results[0], "policies": results} if len(results) > 1 else results[0], indent=2))
        return 0
    columns = [("policy", "policy", "{}"), ("memory_ratio", "memory_ratio", "{:.4f}"),
               ("pressure_fraction", "pressure_fraction", "{:.5f}"),
               ("resizes_per_vm_day", "resizes_per_vm_day", "{:.3f}"),
               ("forced_resizes_per_vm_day", "of which forced by bounds", "{:.3f}"),
               ("own_resizes_per_vm_day", "of which own", "{:.3f}"),
               ("migrated_gib_per_vm_day", "migrated GiB/VM-day", "{:.1f}"), ("slack", "slack", "{:.3f}"),
               ("seconds", "seconds", "{:.1f}")]
    first = results[0]
    print(f"{part}{first['vms']} VMs, {first['vm_days']:.0f} VM-days, {first['samples']} samples "
          f"({first['missing_samples']} missing); {source}, {_knobs(params)}"
          f"{', sized for the time of day' if params.time_of_day else ''}")
    if learns and "dynamic-memory" in names:
        print(f"dynamic-memory learns each VM's {_learnt_words(params)} daily from six candidates, by what each "
              f"would have cost on its past 14 days ({_knobs(replace(params, learn=Learn.NOTHING))} until the VM "
              "has 3 days); its seconds: those days worked out, then the replay")
    print(table(results, columns))
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    """Read the running VMs' history from Prometheus; print what the policy would set each to."""
    from dynamic_memory.model import PolicyParams as Params
    from dynamic_memory.recommend import policy_matchers, recommend, selector_matchers
    from dynamic_memory.sources.prometheus import MetricsView, PrometheusError, PrometheusSettings, PrometheusSource

    doc = _policy_doc(args.policy_file)
    if not args.prometheus.startswith(("http://", "https://")):
        raise UserError(f"--prometheus {args.prometheus!r}: must be an http:// or https:// URL")
    namespace = args.namespace or (doc.namespace if doc else None)
    if doc and doc.spec:
        spec = doc.spec
        params, view = spec.params(), MetricsView(spec.metrics.nameLabel, spec.metrics.namespaceLabel,
                                                  spec.metrics.matchers, parse_duration(spec.metrics.staleAfter))
        selection = selector_matchers(args.selector) if args.selector is not None else policy_matchers(spec.selector)
        policy_words = f"policy {doc.name} from {args.policy_file}" + (
            f" (learnPerVM: with {_knobs(replace(params, learn=Learn.NOTHING))}; the operator sizes a VM that has "
            f"3 days of metrics with the {_learnt_words(params)} it learnt, in the VM's "
            "dynamicmemory.io/learned-setting)" if params.learn else "")
    else:
        params, view = Params(startup=GIB, minimum=GIB, maximum=2**62), MetricsView()
        selection = selector_matchers(args.selector or "")
        policy_words = "the default policy (buffer 20%, at least 1Gi; no maximum: pass --policy-file for yours)"
    matchers = ([f'{view.namespace_label}="{namespace}"'] if namespace else []) + selection
    matchers += [view.matchers] if view.matchers.strip() else []
    source = PrometheusSource(PrometheusSettings(args.prometheus, args.prometheus_token_file, None,
                                                 args.prometheus_insecure), keep_windows=False)
    end = time.time()
    start = end - args.days * 86400
    step = max(1.0, (end - start) / 2_000)  # each point holds the peak of its step
    try:
        histories = source.history(matchers or [f'{view.name_label}!=""'], view, start, end, step)
    except PrometheusError as exc:
        raise UserError(f"--prometheus {args.prometheus}: {exc}") from None
    where = (f"namespace {namespace}" if namespace else "all namespaces") + (
        f", VMs matching {args.selector}" if args.selector else "")
    if not histories:
        print(f"no VM found in {where} with guest memory metrics in the last {args.days:g} days at "
              f"{args.prometheus}; is KubeVirt's virt-handler scraped there (kubevirt_vmi_memory_*)?")
        return 1
    recs = recommend(histories, params, end, max(view.stale_s, 3 * step))
    if args.json:
        print(json.dumps([{"vm": r.key, "node": r.node, "size": r.size, "recommended": r.target,
                           "action": r.action.value, "peak_demand": r.demand_peak, "reason": r.reason}
                          for r in recs], indent=2))
        return 0
    print(f"{len(recs)} VMs in {where}; {args.days:g} days of metrics from {args.prometheus}; {policy_words}\n")
    from dynamic_memory.sim.report import table

    rows = [{"vm": r.key, "size": format_bytes(r.size), "peak": format_bytes(r.demand_peak)
             if r.demand_peak is not None else "unknown", "rec": format_bytes(r.target),
             "change": (("+" if r.target > r.size else "") + format_bytes(r.target - r.size)) if r.target != r.size
             else "keep"} for r in recs]
    print(table(rows, [("vm", "VM", "{}"), ("size", "size now", "{}"), ("peak", "peak demand", "{}"),
                       ("rec", "recommended", "{}"), ("change", "change", "{}")]))
    print("\nwhy:")
    for r in recs:
        print(f"  {r.key}: {r.reason}")
    now, then = sum(r.size for r in recs), sum(r.target for r in recs)
    shrink = sum(r.size - r.target for r in recs if r.target < r.size)
    grow = sum(r.target - r.size for r in recs if r.target > r.size)
    unknown = sum(r.demand_peak is None for r in recs)
    net = (f"{format_bytes(now - then)} freed ({(now - then) / now:.0%})" if now >= then
           else f"{format_bytes(then - now)} more needed ({(then - now) / now:.0%})")
    print(f"\ntotal: {format_bytes(now)} now → {format_bytes(then)}: {net}; shrinks free {format_bytes(shrink)}, "
          f"grows add {format_bytes(grow)}, {sum(r.target == r.size for r in recs)} of {len(recs)} VMs keep their size")
    if unknown:
        print(f"{unknown} VMs have no fresh samples: kept at their size (unknown demand never shrinks a VM)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the operator. Configuration errors stop it here, before Kopf starts."""
    try:
        import kopf
        from kubernetes import config
    except ImportError:
        raise UserError("`dynamic-memory run` needs the operator's packages: "
                        "pip install 'kubevirt-dynamic-memory[operator]' (or -e '.[operator]' in a clone)") from None
    from dynamic_memory.config import OperatorConfig

    flags = {"DM_PROMETHEUS_URL": args.prometheus_url, "DM_PROMETHEUS_TOKEN_FILE": args.prometheus_token_file,
             "DM_PROMETHEUS_CA_FILE": args.prometheus_ca_file,
             "DM_PROMETHEUS_INSECURE": "true" if args.prometheus_insecure else None,
             "DM_NODE_RESERVE": args.node_reserve, "DM_MAX_IN_FLIGHT": args.max_in_flight,
             "DM_METRICS_PORT": args.metrics_port, "DM_MODE_CAP": args.mode_cap}
    os.environ.update({k: str(v) for k, v in flags.items() if v is not None})
    OperatorConfig.from_env()  # every setting checked now: a bad one cannot fix itself by retrying
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise UserError("no cluster to talk to: not running in a pod, and no usable kubeconfig "
                            f"(KUBECONFIG or ~/.kube/config: {exc}).\n"
                            "Point KUBECONFIG at your cluster's kubeconfig, or run the operator in the cluster "
                            "(helm install, see the README).") from None
    import logging

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import dynamic_memory.handlers  # noqa: F401  (registers the handlers)

    kopf.run(standalone=True, clusterwide=True, liveness_endpoint=args.liveness)
    return 0


# --- the parser ------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="dynamic-memory", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    k = sub.add_parser("check", help="validate DynamicMemoryPolicy YAML files (the API server's rules)")
    k.add_argument("files", nargs="+", metavar="FILE", help="YAML files, multi-document ones too ('-': standard input)")
    k.set_defaults(func=cmd_check)

    m = sub.add_parser("recommend", help="what a policy would set your running VMs to, from your Prometheus "
                                         "(read-only)")
    m.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus that scrapes KubeVirt's virt-handler")
    m.add_argument("--namespace", help="only VMs of this namespace (default: the policy file's, else all)")
    m.add_argument("--selector", metavar="SEL",
                   help="only VMs with these labels, as kubectl writes them: app=db,tier in (a,b) "
                        "(default: the policy file's selector)")
    m.add_argument("--policy-file", metavar="FILE", help="a DynamicMemoryPolicy YAML file: its knobs and bounds")
    m.add_argument("--days", type=DAYS, default=1.0, help="days of history to read (default 1)")
    m.add_argument("--prometheus-token-file", metavar="FILE", help="bearer token file for Prometheus")
    m.add_argument("--prometheus-insecure", action="store_true", help="skip TLS verification")
    m.add_argument("--json", action="store_true", help="print one JSON list")
    m.set_defaults(func=cmd_recommend)

    d = sub.add_parser("demo", help="every scenario, every policy: the main job, no cluster needed")
    d.add_argument("--out", default="out/demo", help="folder for the PNGs and JSONs (default ./out/demo)")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("simulate", help="run a scenario for every policy: table, PNG plot and JSON report")
    s.add_argument("--scenario", required=True, choices=[*SCENARIO_NAMES, "trace"])
    s.add_argument("--trace", metavar="FILE", help="trace file for --scenario trace (shared format, .csv or .csv.gz)")
    s.add_argument("--vms", type=VM_COUNT, default=24, help="VMs taken from the trace (at least 1, default 24)")
    s.add_argument("--days", type=DAYS, default=3.0, help="days of the trace to run (default 3)")
    s.add_argument("--policy", choices=[*POLICY_NAMES, "all"], default="all")
    s.add_argument("--policy-file", metavar="FILE", help="run this DynamicMemoryPolicy YAML for every VM")
    s.add_argument("--out", default="out", help="folder for the PNG and JSON (default ./out)")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("replay", help="replay a trace file (shared format) and score the policy")
    r.add_argument("trace", help="trace file: columns vm, timestamp_s, memory_provisioned_kib, memory_usage_kib")
    r.add_argument("--policy", choices=[*POLICY_NAMES, "all", "optimum"], default="dynamic-memory",
                   help="optimum: the least memory any policy could assign knowing the future (a reference line); "
                        "dynamic-memory learns each VM's minimum buffer and scale-down window as the operator does "
                        "(learnPerVM), unless --policy-file turns that off or sets them")
    r.add_argument("--budget", type=BUDGET, metavar="R",
                   help="with --policy optimum: own resizes per VM-day it may make (default: a frontier of budgets)")
    knobs = r.add_mutually_exclusive_group()
    knobs.add_argument("--buffer", type=BUFFER, metavar="PERCENT",
                       help=f"bufferPercent of the default policy ({BUFFER_RANGE[0]} to {BUFFER_RANGE[1]}, "
                            "default 20); with --policy optimum, the margin above usage it keeps (default none)")
    knobs.add_argument("--policy-file", metavar="FILE",
                       help="a DynamicMemoryPolicy YAML file: its knobs (the trace sets the sizes)")
    r.add_argument("--days", type=day_range, metavar="FROM:TO",
                   help="only these days after the trace's first sample, every VM starting over "
                        "(e.g. 0:15 and 15: for the halves of a month: choose knobs on one, judge on the other)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=cmd_replay)

    c = sub.add_parser("crd", help="print the DynamicMemoryPolicy CRD generated from the API models")
    c.add_argument("-o", "--output", help="write to this file instead of standard output")
    c.set_defaults(func=cmd_crd)

    o = sub.add_parser("run", help="run the operator (needs the 'operator' extra: pip install .[operator])")
    o.add_argument("--prometheus-url", help="Prometheus base URL (env DM_PROMETHEUS_URL)")
    o.add_argument("--prometheus-token-file", help="bearer token file for Prometheus (re-read on every query)")
    o.add_argument("--prometheus-ca-file", help="CA bundle to verify Prometheus' TLS certificate")
    o.add_argument("--prometheus-insecure", action="store_true", help="skip TLS verification (tests only)")
    o.add_argument("--node-reserve", help="memory kept free on every node, a quantity (default 1Gi)")
    o.add_argument("--max-in-flight", help="resizes under way cluster-wide at most (1 to 1000, default 2)")
    o.add_argument("--metrics-port", help="port of the operator's /metrics (0 to 65535, default 8000; 0: off)")
    o.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="Kopf's liveness endpoint")
    o.add_argument("--mode-cap", choices=["Off", "Recommend", "Auto"],
                   help="the most any policy may do; Recommend makes the operator report-only (default Auto)")
    o.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    o.set_defaults(func=cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script: bad input is a message and exit 2, never a traceback."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        lines = str(exc).splitlines() or ["(no details)"]
        print(f"error: {lines[0]}", *lines[1:], sep="\n", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): say nothing more, as other commands do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
