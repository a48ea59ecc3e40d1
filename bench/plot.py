"""Latency percentiles (p50, p90, p99) per rate per target, CPU per call and the two-core
scale-out, as one PNG: `plot.py results.json out.png`.

Runs under bench/.venv-tools (matplotlib is not a project dependency), so it imports
nothing from the project.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {
    "direct": "#555555",
    "aig": "#1b7f3b",
    "aig-inproc": "#2e86c1",
    "litellm": "#c0392b",
    "litellm-db": "#8e44ad",
}
PERCENTILES = (("p50_ms", "-", "o"), ("p90_ms", "-.", "s"), ("p99_ms", "--", "^"))


def plot(results: dict, output: Path) -> None:
    targets = results["targets"]
    scaleout = results.get("scaleout")
    panels = 3 if scaleout else 2
    figure, axes = plt.subplots(
        1,
        panels,
        figsize=(15 if scaleout else 11, 4.6),
        gridspec_kw={"width_ratios": [3, 2, 2][:panels]},
    )
    latency, cpu = axes[0], axes[1]
    for name, target in targets.items():
        rates = sorted(int(rate) for rate in target["rates"])
        colour = COLOURS.get(name)
        for key, style, marker in PERCENTILES:
            values = [target["rates"][str(rate)].get(key, float("nan")) for rate in rates]
            latency.plot(
                rates, values, style, marker=marker, color=colour, label=f"{name} {key[:3]}"
            )
    latency.set_xticks(sorted({int(r) for t in targets.values() for r in t["rates"]}))
    latency.set_xlabel("offered rate (calls/s, open loop)")
    latency.set_ylabel("latency (ms, log)")
    latency.set_yscale("log")
    latency.set_title("Latency p50 / p90 / p99 per rate (upstream delay included)")
    latency.grid(True, which="both", alpha=0.3)
    latency.legend(fontsize=7, ncol=len(targets), loc="upper center", bbox_to_anchor=(0.5, -0.14))

    names = list(targets)
    per_call = [(targets[n]["cpu"]["seconds_per_1k_calls"] or 0.0) for n in names]
    cpu.bar(names, per_call, color=[COLOURS.get(n, "#999999") for n in names])
    cpu.set_ylabel("CPU seconds per 1,000 calls")
    cpu.set_title("CPU cost per call (lower is better)")
    for index, value in enumerate(per_call):
        cpu.annotate(f"{value:.2f}", (index, value), ha="center", va="bottom", fontsize=8)
    if scaleout:
        _plot_scaleout(axes[2], scaleout)
    figure.suptitle(f"aig vs. LiteLLM vs. direct — {results['plan']['name']} run", fontsize=10)
    figure.tight_layout()
    figure.savefig(output, dpi=90)


def _plot_scaleout(axis: plt.Axes, scaleout: dict) -> None:
    """Peak RPS on one core and on two, per gateway, each bar labelled with its figure."""
    groups = [("aig", scaleout["aig"]["one_core_rps"], scaleout["aig"]["two_core_rps"])]
    if scaleout.get("aig_inproc"):
        in_process = scaleout["aig_inproc"]
        groups.append(("aig-inproc", in_process["one_core_rps"], in_process["two_core_rps"]))
    if scaleout.get("litellm"):
        litellm = scaleout["litellm"]
        groups.append(("litellm", litellm["one_worker_rps"], litellm["two_workers_rps"]))
    for index, (name, one, two) in enumerate(groups):
        for offset, value, alpha, label in ((-0.2, one, 0.5, "1 core"), (0.2, two, 1.0, "2 cores")):
            axis.bar(
                index + offset,
                value or 0.0,
                width=0.38,
                color=COLOURS.get(name),
                alpha=alpha,
                label=label if index == 0 else None,
            )
            axis.annotate(
                f"{value or 0:.0f}",
                (index + offset, value or 0),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    axis.set_xticks(range(len(groups)), [name for name, _, _ in groups])
    axis.set_ylabel("peak RPS (closed loop, < 0.1 % errors)")
    axis.set_title("Scale-out: one core vs. two")
    axis.legend(fontsize=7)


if __name__ == "__main__":
    plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
