"""`python -m bench` (what `make bench` runs): install the tools, run, write the results.

python -m bench            full comparison, under 10 minutes on 2 cores
python -m bench --quick    the same phases, shorter (~2 minutes), for development
python -m bench --soak     aig alone under steady load for 5 minutes, RSS trend only
python -m bench --soak --soak-minutes 30   the same for 30 minutes (issue 16's soak)
python -m bench --soak --in-process-router  the same for an edge running the router in-process
python -m bench.scaleout   the two-core phase alone, against one-core peaks taken just before

Only the runs the committed reports describe write them into bench/ (RESULTS.md, the chart,
the profiles; SOAK.md): a default run and a soak of 30 minutes or more. A --quick run or a
shorter soak writes its report into --out only, so development runs never overwrite them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

from .install import ensure_installed
from .plan import DEFAULT, QUICK, SOAK, Plan
from .report import aig_commit, machine, render, render_soak
from .run import execute, log

HERE = Path(__file__).parent
# The soak issue 16 asks for; a shorter one is a development run.
COMMITTED_SOAK_MIN_S = 30 * 60
# Small enough to commit beside RESULTS.md.
COMMITTED_PLOT_MAX_BYTES = 300_000
COMMITTED_PROFILE_MAX_BYTES = 500_000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short phases (~2 min)")
    mode.add_argument("--soak", action="store_true", help="5-minute RSS soak of aig only")
    parser.add_argument("--out", type=Path, default=HERE / "out", help="results directory")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin gateways and load generator to cores"
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        help="with --soak: how long (default 5); RSS is sampled about 120 times",
    )
    parser.add_argument(
        "--in-process-router",
        action="store_true",
        help="with --soak: soak an edge running the router in its process (SOAK-inproc.md)",
    )
    args = parser.parse_args()
    if args.soak_minutes is not None and not args.soak:
        parser.error("--soak-minutes goes with --soak")
    if args.in_process_router and not args.soak:
        parser.error("--in-process-router goes with --soak")
    plan = SOAK if args.soak else QUICK if args.quick else DEFAULT
    if args.soak_minutes is not None:
        plan = soak_plan(args.soak_minutes)
    if args.in_process_router:
        plan = dataclasses.replace(plan, in_process_router=True, soak_target="aig-inproc")

    ensure_installed()
    # The commit of the code the services load as they start, not of whatever is checked out
    # by the time a 30-minute soak ends.
    commit = aig_commit()
    results = execute(plan, args.out, pin=not args.no_pin)
    results["machine"] = machine(commit)

    report_dir = report_directory(plan, args.out)
    if args.soak:
        suffix = "-inproc" if args.in_process_router else ""
        path = args.out / f"soak{suffix}.json"
        path.write_text(json.dumps(results["soak"], indent=2))
        report = report_dir / f"SOAK{suffix}.md"
        report.write_text(render_soak(results))
        for name, figures in results["soak"]["processes"].items():
            log(f"soak {name}: {json.dumps(figures)}")
        log(f"wrote {path} and {report}")
        return

    results_path = args.out / "results.json"
    results_path.write_text(json.dumps(results, indent=2))
    plot_path = args.out / "latency.png"
    subprocess.run(
        [
            str(HERE / ".venv-tools" / "bin" / "python"),
            str(HERE / "plot.py"),
            results_path,
            plot_path,
        ],
        check=True,
    )
    if report_dir == HERE:
        if plot_path.stat().st_size <= COMMITTED_PLOT_MAX_BYTES:
            shutil.copyfile(plot_path, HERE / "latency.png")
        # The flame graphs stay beside the results they explain, so the next optimisation
        # starts from this run's data.
        for graph in args.out.glob("profile-*.svg"):
            if graph.stat().st_size <= COMMITTED_PROFILE_MAX_BYTES:
                (HERE / "profiles").mkdir(exist_ok=True)
                shutil.copyfile(graph, HERE / "profiles" / graph.name)
    results_md = report_dir / "RESULTS.md"
    # The sections other commands measured come from the committed report either way.
    committed = HERE / "RESULTS.md"
    kept = kept_sections(committed.read_text()) if committed.exists() else ""
    results_md.write_text(render(results) + kept)
    log(f"wrote {results_path}, {plot_path} and {results_md}")


def report_directory(plan: Plan, out: Path) -> Path:
    """Where a run's Markdown report goes: bench/ for the runs the committed reports
    describe (the default plan, a soak of 30 minutes or more), `out` for the rest."""
    soak = plan.name == SOAK.name
    if plan.name == DEFAULT.name or (soak and plan.soak_seconds >= COMMITTED_SOAK_MIN_S):
        return HERE
    out.mkdir(parents=True, exist_ok=True)
    return out


def soak_plan(minutes: float) -> Plan:
    """The soak plan, `minutes` long, sampling RSS every 5 s or often enough for ~120
    samples, whichever is rarer."""
    seconds = round(minutes * 60)
    return dataclasses.replace(
        SOAK, soak_seconds=seconds, soak_interval_s=max(SOAK.soak_interval_s, seconds / 120)
    )


def kept_sections(previous: str) -> str:
    """The sections of RESULTS.md that other commands measured (each heading names its
    `python -m bench.<module>`), from the first of them to the end: a default run rewrites
    only its own sections and keeps these."""
    lines = previous.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith("## ") and "`python -m bench." in line:
            return "\n" + "".join(lines[index:])
    return ""


if __name__ == "__main__":
    main()
