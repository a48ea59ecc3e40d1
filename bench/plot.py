"""Latency vs. rate for every target, as a PNG: `plot.py results.json out.png`.

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

COLOURS = {"direct": "#555555", "aig": "#1b7f3b", "litellm": "#c0392b", "litellm-db": "#8e44ad"}


def plot(results: dict, output: Path) -> None:
    targets = results["targets"]
    figure, (latency, cpu) = plt.subplots(
        1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]}
    )
    for name, target in targets.items():
        rates = sorted(int(rate) for rate in target["rates"])
        colour = COLOURS.get(name)
        for key, style in (("p50_ms", "-"), ("p99_ms", "--")):
            values = [target["rates"][str(rate)][key] for rate in rates]
            latency.plot(rates, values, style, marker="o", color=colour, label=f"{name} {key[:3]}")
    latency.set_xlabel("offered rate (calls/s, open loop)")
    latency.set_ylabel("latency (ms, log)")
    latency.set_yscale("log")
    latency.set_title("Latency vs. rate (upstream delay included)")
    latency.grid(True, which="both", alpha=0.3)
    latency.legend(fontsize=7, ncol=2)

    names = list(targets)
    per_call = [(targets[n]["cpu"]["seconds_per_1k_calls"] or 0.0) for n in names]
    cpu.bar(names, per_call, color=[COLOURS.get(n, "#999999") for n in names])
    cpu.set_ylabel("CPU seconds per 1,000 calls")
    cpu.set_title("CPU cost per call (lower is better)")
    for index, value in enumerate(per_call):
        cpu.annotate(f"{value:.2f}", (index, value), ha="center", va="bottom", fontsize=8)
    figure.suptitle(f"aig vs. LiteLLM vs. direct — {results['plan']['name']} run", fontsize=10)
    figure.tight_layout()
    figure.savefig(output, dpi=90)


if __name__ == "__main__":
    plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
