"""Every benchmark in one run, then the speed targets checked against what was measured.

Runs, each in its own process with a time cap: `train_step.py`, `inference.py`, `end_to_end.py` at batch 32 and 64,
`input_pipeline.py` (the host's feed, on the CPU), then the compiled variants: `train_step.py --compile`, and
`train_step.py` and `inference.py` with `--compile-mode reduce-overhead` (CUDA graphs on a GPU). The compiled runs
report each first step or call, compilation included, apart from their rates. A run stopped at its cap counts with
the rows it wrote before (`train_step.py` writes each batch size as it is done). Writes their JSON files and
`targets.json` to `--output-dir` and prints one row per target: the threshold, the figure measured (the best of the
eager and compiled runs) and whether it is met (`not measured` when its benchmark failed or did not measure it; a
failed benchmark is reported with the tail of its output).

The default caps ([`DEFAULT_CAPS`]) add up to 14 minutes, so that the whole run fits a 15-minute lease of one GPU
machine; `--timeout SECONDS` gives every run the same cap, `--cap NAME=SECONDS` one run its own:

    python benchmarks/run_all.py --output-dir bench --end-to-end-train-size 2048     # on the GPU machine
    python benchmarks/run_all.py --output-dir bench --cap train_step_graphs=240      # a longer compile
    python benchmarks/run_all.py --tiny --output-dir /tmp/b    # CPU smoke run (the targets are not meaningful there)
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import signal
import subprocess
from typing import Any

from benchmarks import common

RUNS: dict[str, list[str]] = {
    "train_step": ["train_step.py"],
    "inference": ["inference.py"],
    "end_to_end_b32": ["end_to_end.py", "--batch-size", "32"],
    "end_to_end_b64": ["end_to_end.py", "--batch-size", "64"],
    "input_pipeline": ["input_pipeline.py"],
    "train_step_compiled": ["train_step.py", "--compile"],
    "train_step_graphs": ["train_step.py", "--compile-mode", "reduce-overhead"],
    "inference_graphs": ["inference.py", "--compile-mode", "reduce-overhead"],
}
"""The benchmark runs, by the name of their JSON file, in the order they run (compilation, the slowest, last)."""
COMPILED_RUNS = ("train_step_compiled", "train_step_graphs", "inference_graphs")
"""The runs whose arguments are compile options only."""
TINY_COMPILE = ("--compile-backend", "aot_eager")
"""How `--tiny` compiles: the graphs traced, forward and backward, without Inductor's kernels (minutes on a loaded
CPU), so that a smoke run checks the compiled runs' code within its caps."""
DEFAULT_CAPS: dict[str, int] = {
    "train_step": 80,
    "inference": 50,
    "end_to_end_b32": 130,
    "end_to_end_b64": 120,
    "input_pipeline": 50,
    "train_step_compiled": 150,
    "train_step_graphs": 160,
    "inference_graphs": 100,
}
"""Seconds each run may take by default: 840 in all, 14 minutes."""
END_TO_END_BATCHES: dict[str, int] = {"end_to_end_b32": 32, "end_to_end_b64": 64}
TINY_RUNS = ("train_step", "inference", "end_to_end_b32", "input_pipeline", "train_step_graphs", "inference_graphs")
"""The runs of `--tiny` (one end-to-end batch size, one compiled variant of each model benchmark: a smoke run)."""


def run_capped(command: list[str], cap: int) -> subprocess.CompletedProcess:
    """Runs `command` in the project folder and a process group of its own, which is killed whole at `cap` seconds
    (`end_to_end.py`'s `run_mre.py` and its dataloader workers too, so that none runs on into the next benchmark)."""
    process = subprocess.Popen(
        command, cwd=common.PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_benchmarks(
    output_dir: Path,
    tiny: bool,
    timeout: int | None = None,
    caps: dict[str, int] | None = None,
    end_to_end_train_size: int | None = None,
) -> dict[str, dict[str, Any] | None]:
    """Runs the benchmarks, each within `caps[name]` seconds, else `timeout`, else its [`DEFAULT_CAPS`] (the
    end-to-end ones on `end_to_end_train_size` generated posts when given), and returns their figures by run name
    (`None` for a run that failed or timed out)."""
    caps = caps or {}
    output_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, dict[str, Any] | None] = {}
    for name, command in RUNS.items():
        if tiny and name not in TINY_RUNS:
            continue
        output = output_dir / f"{name}.json"
        script, *arguments = command
        if tiny:  # the tiny model and inputs; a compiled run keeps its options and only traces (no kernels made)
            arguments = ["--tiny", *arguments, *TINY_COMPILE] if name in COMPILED_RUNS else ["--tiny"]
        if name in END_TO_END_BATCHES and end_to_end_train_size is not None:
            arguments = [*arguments, "--train-size", str(end_to_end_train_size)]
        full = [sys.executable, str(Path(__file__).with_name(script)), *arguments, "--output", str(output)]
        cap = caps.get(name, timeout or DEFAULT_CAPS[name])
        print(f"== {name} (at most {cap} s): {' '.join(full[1:])}", flush=True)
        output.unlink(missing_ok=True)  # a stopped run must not be credited with an earlier run's figures
        try:
            result = run_capped(full, cap)
        except subprocess.TimeoutExpired:
            partial = json.loads(output.read_text(encoding="utf-8")) if output.is_file() else None
            kept = f"; kept the {len(partial['rows'])} rows it wrote" if partial else ""
            print(f"   timed out after {cap} s{kept}")
            figures[name] = partial
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
    """One row per speed target: `target`, `threshold`, `measured` (`None` when not measured) and
    `met`."""
    steps = [
        row
        for run in ("train_step", "train_step_compiled", "train_step_graphs")
        for row in _rows(figures.get(run), what="hvformer_marker_rows")
    ]
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
    inference = [figures.get("inference"), figures.get("inference_graphs")]  # eager, and CUDA graphs replayed
    latency = [row["p50_ms"] for run in inference for row in _rows(run, what="model latency", fusion_rows="markers")]
    throughput = [
        row["samples_per_second"]
        for run in inference
        for row in _rows(run, what="evaluation throughput", fusion_rows="markers")
    ]
    checks.append(("model batch-1 latency p50, ms", 8.0, min(latency, default=None), False))
    checks.append(("evaluation samples/s at the evaluation batch", 6000.0, max(throughput, default=None), True))
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


def _cap(text: str) -> tuple[str, int]:
    """`NAME=SECONDS` of `--cap`, checked against the run names."""
    name, _, seconds = text.partition("=")
    if name not in RUNS or not seconds.isdigit():
        names = ", ".join(RUNS)
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS with NAME one of {names}; got {text[:80]!r}")
    return name, int(seconds)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="Tiny CPU smoke runs of the benchmarks.")
    parser.add_argument("--output-dir", type=Path, required=True, help="Where the JSON files go.")
    parser.add_argument(
        "--timeout", type=int, default=None, help="Seconds every run may take (default: each its own, DEFAULT_CAPS)."
    )
    parser.add_argument(
        "--cap",
        type=_cap,
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help=f"Seconds one run may take, instead of --timeout; NAME is one of {', '.join(RUNS)}. Repeatable.",
    )
    parser.add_argument(
        "--end-to-end-train-size",
        type=int,
        default=None,
        help="Generated train posts of the end-to-end runs (their default: 4,096, over a minute to generate on an "
        "H200 machine's CPU).",
    )
    args = parser.parse_args(argv)
    figures = run_benchmarks(args.output_dir, args.tiny, args.timeout, dict(args.cap), args.end_to_end_train_size)
    targets = check_targets(figures)
    rows = [{**row, "met": {True: "yes", False: "NO", None: "not measured"}[row["met"]]} for row in targets]
    common.report(
        {"targets": targets}, rows, ["target", "threshold", "measured", "met"], args.output_dir / "targets.json"
    )
    return targets


if __name__ == "__main__":
    main()
