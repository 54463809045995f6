"""`dynamic-memory`: generate the CRD, simulate scenarios, replay traces (and, with extras, run the operator)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynamic_memory.model import PolicyParams
from dynamic_memory.quantity import GIB

if TYPE_CHECKING:
    from dynamic_memory.policy.engine import Policy

POLICY_NAMES = ("dynamic-memory", "static", "hyperv", "proxmox", "vpa")


def _policy(name: str, step_s: float) -> Policy:
    from dynamic_memory.sim.report import policies

    return {p.name: p for p in policies(step_s)}[name]


def cmd_crd(args: argparse.Namespace) -> int:
    """Print or write the CRD generated from the API models."""
    from dynamic_memory.crd import crd_yaml

    text = crd_yaml()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _print_scenario(report: dict[str, Any], out_dir: Path) -> None:
    from dynamic_memory.sim.report import table

    print(f"\n## {report['scenario']}: {report['description']}")
    print(table(report["policies"]))
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

    if args.scenario == "trace":
        if not args.trace:
            raise SystemExit("error: --scenario trace needs --trace FILE")
        scenario = from_trace(args.trace, vms=args.vms, days=args.days)
    else:
        scenario = SCENARIOS[args.scenario]()
    chosen = [p for p in policies(scenario.step_s) if args.policy in (None, "all", p.name)]
    results = run_all(scenario, chosen, progress=sys.stderr.isatty())
    out_dir = Path(args.out)
    report = write_report(out_dir, scenario, results)
    _print_scenario(report, out_dir)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Every named scenario, all policies: the tour of what the engine does."""
    from dynamic_memory.sim.report import policies, run_all, write_report
    from dynamic_memory.sim.scenarios import SCENARIOS

    out_dir = Path(args.out)
    print("kubevirt-dynamic-memory demo: the real engine on simulated KubeVirt clusters, beside the baselines")
    for make in SCENARIOS.values():
        scenario = make()
        results = run_all(scenario, policies(scenario.step_s), progress=sys.stderr.isatty())
        _print_scenario(write_report(out_dir, scenario, results), out_dir)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a trace file through one policy or all of them."""
    from dynamic_memory.sim.replay import SLOT_S, replay, replay_oracle
    from dynamic_memory.sim.report import table
    from dynamic_memory.sim.traces import TraceError, load_traces

    path = Path(args.trace)
    if not path.is_file():
        print(f"error: no trace file at {path}", file=sys.stderr)
        return 2
    try:
        traces = load_traces(path)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    params = replace(PolicyParams(startup=0, minimum=0, maximum=2**62), buffer_percent=args.buffer)
    names = POLICY_NAMES if args.policy == "all" else (args.policy,)
    progress = sys.stderr.isatty() and not args.json
    results = [replay(traces, _policy(n, SLOT_S), params, progress=progress).as_dict() for n in names]
    if args.policy == "all":
        results.append(replay_oracle(traces).as_dict())
    if args.json:
        print(json.dumps({**results[0], "policies": results} if len(results) > 1 else results[0], indent=2))
    else:
        columns = [("policy", "policy", "{}"), ("memory_ratio", "memory_ratio", "{:.4f}"),
                   ("pressure_fraction", "pressure_fraction", "{:.5f}"),
                   ("resizes_per_vm_day", "resizes_per_vm_day", "{:.3f}"),
                   ("forced_resizes_per_vm_day", "of which forced by bounds", "{:.3f}"),
                   ("seconds", "seconds", "{:.1f}")]
        print(f"{results[0]['vms']} VMs, {results[0]['vm_days']:.0f} VM-days, {results[0]['samples']} samples "
              f"({results[0]['missing_samples']} missing); buffer {args.buffer}%, minimum buffer "
              f"{params.minimum_buffer // GIB}Gi")
        print(table(results, columns))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the operator (flags become the DM_* settings the handlers read)."""
    import os

    env = {"DM_PROMETHEUS_URL": args.prometheus_url, "DM_PROMETHEUS_TOKEN_FILE": args.prometheus_token_file,
           "DM_PROMETHEUS_CA_FILE": args.prometheus_ca_file,
           "DM_PROMETHEUS_INSECURE": "true" if args.prometheus_insecure else None,
           "DM_NODE_RESERVE": args.node_reserve, "DM_MAX_IN_FLIGHT": args.max_in_flight,
           "DM_METRICS_PORT": args.metrics_port, "DM_MODE_CAP": args.mode_cap,
           "DM_TICK_SECONDS": args.tick_seconds}
    os.environ.update({k: str(v) for k, v in env.items() if v is not None})
    import logging

    import kopf

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import dynamic_memory.handlers  # noqa: F401  (registers the handlers)

    kopf.run(standalone=True, clusterwide=True, liveness_endpoint=args.liveness)
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="dynamic-memory", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("crd", help="print the DynamicMemoryPolicy CRD generated from the API models")
    c.add_argument("-o", "--output", help="write to this file instead of standard output")
    c.set_defaults(func=cmd_crd)

    from dynamic_memory.sim.scenarios import SCENARIOS

    s = sub.add_parser("simulate", help="run a scenario for every policy: table, PNG plot and JSON report")
    s.add_argument("--scenario", required=True, choices=[*SCENARIOS, "trace"])
    s.add_argument("--trace", help="trace file for --scenario trace (shared format, .csv or .csv.gz)")
    s.add_argument("--vms", type=int, default=24, help="VMs taken from the trace (default 24)")
    s.add_argument("--days", type=float, default=3.0, help="days of the trace to run (default 3)")
    s.add_argument("--policy", choices=[*POLICY_NAMES, "all"], default="all")
    s.add_argument("--out", default="out", help="folder for the PNG and JSON (default ./out)")
    s.set_defaults(func=cmd_simulate)

    d = sub.add_parser("demo", help="every scenario, every policy: the main job, no cluster needed")
    d.add_argument("--out", default="out/demo", help="folder for the PNGs and JSONs (default ./out/demo)")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("replay", help="replay a trace file (shared format) and score the policy")
    r.add_argument("trace", help="trace file: columns vm, timestamp_s, memory_provisioned_kib, memory_usage_kib")
    r.add_argument("--policy", choices=[*POLICY_NAMES, "all"], default="dynamic-memory")
    r.add_argument("--buffer", type=int, default=20, choices=range(5, 2001), metavar="PERCENT",
                   help="bufferPercent for the replay (5-2000, default 20)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=cmd_replay)

    o = sub.add_parser("run", help="run the operator (needs the 'operator' extra: pip install .[operator])")
    o.add_argument("--prometheus-url", help="Prometheus base URL (env DM_PROMETHEUS_URL)")
    o.add_argument("--prometheus-token-file", help="bearer token file for Prometheus (re-read on every query)")
    o.add_argument("--prometheus-ca-file", help="CA bundle to verify Prometheus' TLS certificate")
    o.add_argument("--prometheus-insecure", action="store_true", help="skip TLS verification (tests only)")
    o.add_argument("--node-reserve", help="memory kept free on every node, a quantity (default 1Gi)")
    o.add_argument("--max-in-flight", type=int, help="resizes under way cluster-wide at most (default 2)")
    o.add_argument("--metrics-port", type=int, help="port of the operator's /metrics (default 8000, 0: off)")
    o.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="Kopf's liveness endpoint")
    o.add_argument("--mode-cap", choices=["Off", "Recommend", "Auto"],
                   help="the most any policy may do; Recommend makes the operator report-only (default Auto)")
    o.add_argument("--tick-seconds", type=float,
                   help="how often policies are checked for being due (default 1; policies set their interval)")
    o.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    o.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
