"""Every benchmark in one run, then the targets of issues 11 and 16 checked against what was measured.

Runs, each in its own process with a time cap: `train_step.py` (with and without `--compile`), `inference.py`,
`end_to_end.py` at batch 32 and 64, and `input_pipeline.py` (the host's feed, on the CPU). Writes their JSON files
and `targets.json` to `--output-dir` and prints one row per target: the threshold, the figure measured and whether
it is met (`not measured` when its benchmark failed or did not measure it; a failed benchmark is reported with the
tail of its output).

    python benchmarks/run_all.py --output-dir bench            # on the GPU machine
    python benchmarks/run_all.py --tiny --output-dir /tmp/b    # CPU smoke run (the targets are not meaningful there)
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import subprocess
from typing import Any

from benchmarks import common

RUNS: dict[str, list[str]] = {
    "train_step": ["train_step.py"],
    "train_step_compiled": ["train_step.py", "--compile"],
    "inference": ["inference.py"],
    "end_to_end_b32": ["end_to_end.py", "--batch-size", "32"],
    "end_to_end_b64": ["end_to_end.py", "--batch-size", "64"],
    "input_pipeline": ["input_pipeline.py"],
}
"""The benchmark runs, by the name of their JSON file."""
END_TO_END_BATCHES: dict[str, int] = {"end_to_end_b32": 32, "end_to_end_b64": 64}
TINY_RUNS = ("train_step", "inference", "end_to_end_b32", "input_pipeline")
"""The runs of `--tiny` (no compilation, one end-to-end batch size: a smoke run)."""


def run_benchmarks(output_dir: Path, tiny: bool, timeout: int) -> dict[str, dict[str, Any] | None]:
    """Runs the benchmarks and returns their figures by run name (`None` for a run that failed or timed out)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, dict[str, Any] | None] = {}
    for name, command in RUNS.items():
        if tiny and name not in TINY_RUNS:
            continue
        output = output_dir / f"{name}.json"
        script, *arguments = command
        if tiny:
            arguments = ["--tiny"]
        full = [sys.executable, str(Path(__file__).with_name(script)), *arguments, "--output", str(output)]
        print(f"== {name}: {' '.join(full[1:])}", flush=True)
        try:
            result = subprocess.run(full, capture_output=True, text=True, timeout=timeout, cwd=common.PROJECT)
        except subprocess.TimeoutExpired:
            print(f"   timed out after {timeout} s")
            figures[name] = None
            continue
        print(result.stdout)
        if result.returncode != 0 or not output.is_file():
            print(f"   failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
            figures[name] = None
            continue
        figures[name] = json.loads(output.read_text(encoding="utf-8"))
    return figures


def _rows(figures: dict[str, Any] | None, **match: Any) -> list[dict[str, Any]]:
    return [row for row in (figures or {}).get("rows", []) if all(row.get(k) == v for k, v in match.items())]


def check_targets(figures: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per target of issues 11 and 16: `target`, `threshold`, `measured` (`None` when not measured) and
    `met`."""
    steps = [*_rows(figures.get("train_step"), what="hvformer_marker_rows")]
    steps += _rows(figures.get("train_step_compiled"), what="hvformer_marker_rows")
    largest = max((row["batch_size"] for row in steps), default=None)
    step_rate = {}  # the fastest training step per batch size
    for row in steps:
        step_rate[row["batch_size"]] = max(step_rate.get(row["batch_size"], 0.0), row["samples_per_second"])
    checks: list[tuple[str, float, float | None, bool]] = [
        (
            f"training step MFU at batch {largest}",
            0.40,
            max((row["mfu"] for row in steps if row["batch_size"] == largest), default=None),
            True,
        ),
        (
            "HVFormer / encoders, lowest over the batch sizes",
            0.90,
            min((row["vs_encoders"] for row in steps), default=None),
            True,
        ),
    ]
    for name, nominal in END_TO_END_BATCHES.items():
        train = _rows(figures.get(name), stage="train, 1 epoch")
        batch = (figures.get(name) or {}).get("settings", {}).get("batch_size", nominal)
        rate = train[0]["samples_per_second"] if train else None
        relative = rate / step_rate[batch] if rate is not None and batch in step_rate else None
        checks.append((f"run_mre.py train samples/s at batch {batch} / the step's", 0.90, relative, True))
        if nominal == 32:
            absolute = rate if batch == 32 else None
            checks.append(("run_mre.py train samples/s at batch 32", 1500.0, absolute, True))
    latency = _rows(figures.get("inference"), what="model latency", fusion_rows="markers")
    throughput = _rows(figures.get("inference"), what="evaluation throughput", fusion_rows="markers")
    checks.append(("model batch-1 latency p50, ms", 8.0, latency[0]["p50_ms"] if latency else None, False))
    rate = throughput[0]["samples_per_second"] if throughput else None
    checks.append(("evaluation samples/s at the evaluation batch", 6000.0, rate, True))
    feed = _rows(figures.get("input_pipeline"), what="host feed, one worker")
    transfer = _rows(figures.get("input_pipeline"), what="bytes to the device per sample")
    rate = feed[0]["samples_per_second"] if feed else None
    checks.append(("host feed samples/s, one worker thread", 1000.0, rate, True))
    megabytes = transfer[0]["megabytes_per_sample"] if transfer else None
    checks.append(("MB per sample to the device", 0.40, megabytes, False))
    return [
        {
            "target": target,
            "threshold": f"{'>=' if at_least else '<='} {threshold:g}",
            "measured": measured,
            "met": None if measured is None else (measured >= threshold if at_least else measured <= threshold),
        }
        for target, threshold, measured, at_least in checks
    ]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="Tiny CPU smoke runs of the benchmarks.")
    parser.add_argument("--output-dir", type=Path, required=True, help="Where the JSON files go.")
    parser.add_argument("--timeout", type=int, default=1200, help="Seconds each benchmark may take (default 1200).")
    args = parser.parse_args(argv)
    targets = check_targets(run_benchmarks(args.output_dir, args.tiny, args.timeout))
    rows = [{**row, "met": {True: "yes", False: "NO", None: "not measured"}[row["met"]]} for row in targets]
    common.report(
        {"targets": targets}, rows, ["target", "threshold", "measured", "met"], args.output_dir / "targets.json"
    )
    return targets


if __name__ == "__main__":
    main()
