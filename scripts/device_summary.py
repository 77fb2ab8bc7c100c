"""OUT/summary.md from what scripts/device_check.sh's phases left in OUT (whatever finished):
phases.tsv, kit-install.json, profile.jsonl and bench-<variant>.jsonl.

    python scripts/device_summary.py OUT

Standard library only, so that it writes a summary even when the kit failed to install.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# (label, target, how to read it): the targets
TARGETS = [
    ("turbo, 64 concurrent streamed: audio s per wall s", ">= 100", "turbo_64_throughput", lambda v: v >= 100),
    ("standard, 32 concurrent streamed: audio s per wall s", ">= 30", "standard_32_throughput", lambda v: v >= 30),
    ("turbo lone: time to first audio, median", "<= 150 ms", "turbo_lone_ttfa_ms", lambda v: v <= 150),
    ("turbo, 32 concurrent: time to first audio, median", "<= 300 ms", "turbo_32_ttfa_ms", lambda v: v <= 300),
    ("turbo lone: wall times, max / min", "<= 1.10", "turbo_lone_spread", lambda v: v <= 1.10),
    (
        "turbo: kernels launched outside a CUDA graph per steady T3 step",
        "<= 50",
        "turbo_step_launches",
        lambda v: v <= 50,
    ),
    (
        "standard: kernels launched outside a CUDA graph per steady T3 step",
        "<= 50",
        "standard_step_launches",
        lambda v: v <= 50,
    ),
]


def read_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut short by a phase's kill
    return rows


def fmt(value, spec: str = ".2f", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def main(out: Path) -> int:
    lines = ["# Device check", ""]
    config = out / "config.txt"
    if config.exists():
        lines += ["```", config.read_text().strip(), "```", ""]

    phases = []
    if (out / "phases.tsv").exists():
        for row in (out / "phases.tsv").read_text().splitlines():
            fields = row.split("\t")
            phases.append((fields[0], int(fields[1]), float(fields[2]), float(fields[3])))
    lines += ["## Phases", "", "| phase | outcome | seconds | budget s |", "|---|---|---:|---:|"]
    for name, rc, seconds, budget in phases:
        outcome = "ok" if rc == 0 else ("**timed out**" if rc in (124, 137) else f"**failed (exit {rc})**")
        lines.append(f"| {name} | {outcome} | {seconds:.0f} | {budget:.0f} |")
    lines.append("")

    install = out / "kit-install.json"
    if install.exists():
        report = json.loads(install.read_text())
        device = ", ".join(f"{k} {v or 'missing'}" for k, v in report.get("device", {}).items())
        extra = ", ".join(report.get("fallbacks_installed", {})) or "none"
        lines += [f"Kit: Python {report.get('python')}; device has {device}; fallbacks installed: {extra}.", ""]

    measured: dict[str, float] = {}
    bench = {variant: read_lines(out / f"bench-{variant}.jsonl") for variant in ("turbo", "standard")}
    profile = read_lines(out / "profile.jsonl")

    # ---- concurrency
    lines += [
        "## Concurrency (streamed requests at once, over HTTP)",
        "",
        "| variant | cap | N | audio s | wall s | audio s per wall s | ratio to lone rate | TTFA median / max s | latency median s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, rows in bench.items():
        ready = next((r for r in rows if r["kind"] == "ready"), {})
        lone = [r for r in rows if r["kind"] == "lone"]
        lone_rate = sum(r["audio_s"] for r in lone) / sum(r["wall_s"] for r in lone) if lone else None
        done = {r["level"] for r in rows if r["kind"] == "level"}
        for r in rows:
            if r["kind"] == "level":
                ratio = r["throughput"] / lone_rate if lone_rate else None
                lines.append(
                    f"| {variant} | {ready.get('tokens', '?')} | {r['level']} | {r['audio_s']:.1f} | {r['wall_s']:.1f} "
                    f"| **{r['throughput']:.2f}** | {fmt(ratio)}x | {r['ttfa_median_s']:.3f} / {r['ttfa_max_s']:.3f} "
                    f"| {r['latency_median_s']:.2f} |"
                )
                measured[f"{variant}_{r['level']}_throughput"] = r["throughput"]
                measured[f"{variant}_{r['level']}_ttfa_ms"] = 1000 * r["ttfa_median_s"]
            elif r["kind"] == "level_started" and r["level"] not in done:
                lines.append(
                    f"| {variant} | {ready.get('tokens', '?')} | {r['level']} | | | not finished in its phase's budget | | | |"
                )
        if lone:
            ttfa = [r["ttfa_s"] for r in lone]
            walls = [r["wall_s"] for r in lone]
            measured[f"{variant}_lone_ttfa_ms"] = 1000 * statistics.median(ttfa)
            measured[f"{variant}_lone_spread"] = max(walls) / min(walls)
    lines.append("")

    # ---- lone requests
    lines += [
        "## Lone requests (one after another, after the warm-up)",
        "",
        "| variant | requests | TTFA median / min / max ms | wall median s | wall max / min | audio s per wall s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant, rows in bench.items():
        lone = [r for r in rows if r["kind"] == "lone"]
        if not lone:
            continue
        ttfa = [1000 * r["ttfa_s"] for r in lone]
        walls = [r["wall_s"] for r in lone]
        rate = sum(r["audio_s"] for r in lone) / sum(walls)
        lines.append(
            f"| {variant} | {len(lone)} | {statistics.median(ttfa):.0f} / {min(ttfa):.0f} / {max(ttfa):.0f} "
            f"| {statistics.median(walls):.2f} | {max(walls) / min(walls):.2f} | {rate:.2f} |"
        )
    lines.append("")

    # ---- streaming
    lines += [
        "## Streaming (one utterance, predictor SSE against V2 infer)",
        "",
        "| variant | tokens | audio s | unstreamed s | TTFA s | streamed total s | stall-free start s | TTFA / unstreamed | total / unstreamed | first chunk ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, rows in bench.items():
        for r in rows:
            if r["kind"] == "streaming":
                lines.append(
                    f"| {variant} | {r['speech_tokens']} | {r['audio_s']:.2f} | {r['unstreamed_s']:.2f} | {r['ttfa_s']:.3f} "
                    f"| {r['stream_total_s']:.2f} | {r['startup_delay_s']:.2f} | {r['ttfa_s'] / r['unstreamed_s']:.3f} "
                    f"| {r['stream_total_s'] / r['unstreamed_s']:.2f} | {r['first_chunk_ms']:.0f} |"
                )
    lines.append("")

    # ---- profile
    lines += [
        "## Profile (in-process, torch profiler)",
        "",
        "| variant | what | wall | T3 step: kernel launches (outside graphs) | graph launches | host reads | aten ops (outermost / all) | tick: GPU kernels | trace |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in profile:
        if r["kind"] == "lone":
            lines.append(
                f"| {r['variant']} | lone request, {r['tokens']} tokens, {r['ticks']} ticks (first audio {fmt(r['ttfa_s'], '.3f')} s) "
                f"| {r['wall_s']:.2f} s | | | | | | {r['trace']} |"
            )
        elif r["kind"] == "tick":
            step, tick = r["t3_step"], r["tick"]
            lines.append(
                f"| {r['variant']} | one steady tick, {r['rows_in_t3_batch']} rows | {1000 * r['wall_s']:.1f} ms "
                f"| **{step['kernel_launches']}** | {step['graph_launches']} | {step['host_reads']} "
                f"| {step['aten_ops_outermost']} / {step['aten_ops']} | {tick['gpu_kernels']} | {r['trace']} |"
            )
            if tick["kernel_launches"] or tick["graph_launches"] or tick["gpu_kernels"]:  # none on a CPU
                measured[f"{r['variant']}_step_launches"] = step["kernel_launches"]
        elif r["kind"] == "error":
            lines.append(f"| {r['variant']} | **failed**: {r['error'][:200]} | | | | | | | |")
    lines.append("")

    # ---- targets, first in the file
    target_lines = ["## Targets", "", "| target | goal | measured | met |", "|---|---|---:|---|"]
    for label, goal, key, met in TARGETS:
        value = measured.get(key)
        shown = "–" if value is None else (f"{value:.0f}" if key.endswith(("_ms", "_launches")) else f"{value:.2f}")
        verdict = "n/a" if value is None else ("yes" if met(value) else "**no**")
        target_lines.append(f"| {label} | {goal} | {shown} | {verdict} |")
    target_lines += [
        "",
        "n/a: not measured (phase cut short or failed, a level not run, or no CUDA kernels on a CPU run).",
        "",
    ]
    head = 4 if config.exists() else 0
    lines = lines[: 2 + head] + target_lines + lines[2 + head :]
    graphs = out / "graphs.md"  # scripts/device_graph_check.py: CUDA_GRAPHS=on against the eager batch
    if graphs.exists():
        lines += ["", "## CUDA graphs", "", graphs.read_text().strip()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
