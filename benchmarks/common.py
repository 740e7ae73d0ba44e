"""What the benchmarks share: the paper-size and tiny models, synthetic batches, timing, the environment record and
the output (a JSON file and a printed table)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import BertConfig, CLIPVisionConfig

from modeling_hvformer import HVFormerConfig, HVFormerForRelationExtraction
from training.run_files import write_text_atomic

PROJECT = Path(__file__).resolve().parents[1]
MARKER_IDS = [1, 2, 3, 4]
"""Entity-marker ids of the synthetic batches: BERT's `[unused0]`..`[unused3]`."""
MARKER_POSITIONS = (2, 6)
"""Where the synthetic batches put `<s>` and `<o>` (`</s>` and `</o>` follow two tokens later)."""
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""`torch.compile`'s modes, for `--compile-mode` (Inductor's)."""
CPU_INSTRUCTION_SETS: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "sve",
    "bf16",
    "i8mm",
)
"""The CPU instruction sets that decide float32, bf16 and int8 speed on the CPU (x86 `flags` and Arm `Features` of
`/proc/cpuinfo`), recorded with every figure."""


def paper_config() -> HVFormerConfig:
    """The paper's model (§4.1.2): BERT-base, CLIP ViT-B/32 at 224 px, levels 0/6/12, 12 heads, 3 crops of 128 px."""
    return HVFormerConfig(
        text_config=BertConfig(),
        vision_config=CLIPVisionConfig(),
        vision_levels=[0, 6, 12],
        num_cross_attention_heads=12,
        num_object_crops=3,
        object_image_size=128,
        entity_marker_token_ids=MARKER_IDS,
    )


def tiny_config() -> HVFormerConfig:
    """A model small enough for a CPU smoke run: 2-layer BERT (width 32), 2-layer CLIP ViT (width 48, 32 px)."""
    return HVFormerConfig(
        text_config=BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37
        ),
        vision_config=CLIPVisionConfig(
            hidden_size=48,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        vision_levels=[0, 1, 2],
        num_cross_attention_heads=4,
        num_object_crops=2,
        object_image_size=16,
        entity_marker_token_ids=MARKER_IDS,
    )


def build_model(tiny: bool, device: torch.device, seed: int = 0) -> HVFormerForRelationExtraction:
    """Random weights from the configuration (no download)."""
    torch.manual_seed(seed)
    return HVFormerForRelationExtraction(tiny_config() if tiny else paper_config()).to(device)


def synthetic_batch(
    config: HVFormerConfig, batch_size: int, text_length: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A collated batch as `HVFormerDataCollator` gives it: markers in place, random uint8 pixels (the model
    normalises them), all crops present (`object_mask` given, so the key masks are built as in training),
    `marker_positions` and `labels`."""
    generator = torch.Generator().manual_seed(seed)
    vocab_size = config.text_config.vocab_size
    input_ids = torch.randint(len(MARKER_IDS) + 1, vocab_size, (batch_size, text_length), generator=generator)
    subject, obj = MARKER_POSITIONS
    input_ids[:, [subject, subject + 2, obj, obj + 2]] = torch.tensor(MARKER_IDS)
    image_size = config.vision_config.image_size
    crops, crop_size = config.num_object_crops, config.object_image_size
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
        "pixel_values": torch.randint(0, 256, (batch_size, 3, image_size, image_size), generator=generator).byte(),
        "object_pixel_values": torch.randint(
            0, 256, (batch_size, crops, 3, crop_size, crop_size), generator=generator
        ).byte(),
        "object_mask": torch.ones(batch_size, crops, dtype=torch.long),
        "marker_positions": torch.tensor([MARKER_POSITIONS] * batch_size),
        "labels": torch.randint(0, config.num_labels, (batch_size,), generator=generator),
    }
    return {name: value.to(device) for name, value in batch.items()}


def prepare(args: argparse.Namespace) -> torch.device:
    """The device of `--device` (default: cuda when available, else cpu); one CPU thread for `--tiny`, so that smoke
    runs on a shared CPU are not slowed down by thread contention."""
    if args.tiny:
        torch.set_num_threads(1)
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def autocast(device: torch.device):
    """bf16 autocast on a GPU (the paper-size runs); float32 on the CPU (the smoke runs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls, the device synchronised around each."""
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def git_commit() -> str:
    """The project's git commit, with `+changes` when tracked files differ from it (a GPU machine gets a copy of the
    working tree beside a `.git` that may be older), or "unknown" without git."""

    def git(*arguments: str) -> str:
        result = subprocess.run(["git", *arguments], cwd=PROJECT, capture_output=True, text=True, timeout=30)
        return result.stdout.strip() if result.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        changed = bool(commit and git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{commit}+changes" if changed else commit or "unknown"


def cpu_description(cpuinfo: str) -> dict[str, Any]:
    """The CPU's model name and which of [`CPU_INSTRUCTION_SETS`] it has, from the text of `/proc/cpuinfo` (its first
    processor's entry)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, separator, value = line.partition(":")
        if separator:
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or fields.get("Model") or platform.processor() or "unknown"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"cpu": name, "cpu_instruction_sets": [name for name in CPU_INSTRUCTION_SETS if name in flags]}


def host_cpu() -> dict[str, Any]:
    """[`cpu_description`] of this machine (`cpu_instruction_sets` empty where `/proc/cpuinfo` is not there)."""
    try:
        return cpu_description(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return cpu_description("")


def environment(device: torch.device) -> dict[str, Any]:
    """Where and with what a figure was measured; the host CPU always (it runs the CPU figures, and feeds a GPU)."""
    cpu = host_cpu()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu["cpu"]
    return {
        "device": name,
        "device_type": device.type,
        **cpu,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def add_compile_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """`--compile`, `--compile-mode` and `--compile-backend`, which [`compiled`] reads."""
    parser.add_argument("--compile", action="store_true", help=f"torch.compile {what}.")
    parser.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default=None,
        help="torch.compile's mode (implies --compile); reduce-overhead replays CUDA graphs, for host-bound steps.",
    )
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile's backend (implies --compile when not inductor); aot_eager traces the graphs, forward "
        "and backward, without generating kernels (run_all.py's --tiny smoke runs: Inductor takes minutes on a "
        "loaded CPU). Its mode applies to Inductor only.",
    )


def compile_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Whether and how `args` ask to compile, for the figures' settings."""
    on = args.compile or args.compile_mode is not None or args.compile_backend != "inductor"
    return {"compile": on, "compile_mode": args.compile_mode, "compile_backend": args.compile_backend if on else None}


def compiled(function: Callable, args: argparse.Namespace) -> Callable:
    """`function` compiled as `args` ask, for static shapes (a graph per input shape), or as it is."""
    if not compile_settings(args)["compile"]:
        return function
    mode = args.compile_mode if args.compile_backend == "inductor" else None
    return torch.compile(function, backend=args.compile_backend, mode=mode, dynamic=False)


RUN_TIMEOUT = 3600
"""Longest a benchmark's `run_mre.py` process may take (seconds)."""


def run_script(arguments: list[str], output_dir: Path, tiny: bool) -> tuple[float, dict[str, Any]]:
    """Runs `run_mre.py ARGUMENTS --output_dir OUTPUT_DIR` in a new process, offline (one CPU thread when `tiny`);
    returns its wall time and `all_results.json`."""
    command = [sys.executable, str(PROJECT / "run_mre.py"), *arguments, "--output_dir", str(output_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if tiny:
        env["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    result = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return seconds, json.loads((output_dir / "all_results.json").read_text(encoding="utf-8"))


def argument_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--tiny", action="store_true", help="A tiny model on small inputs, one CPU thread: a smoke run."
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu).")
    parser.add_argument("--output", type=Path, default=None, help="Write the figures to this JSON file.")
    return parser


def report(figures: dict[str, Any], rows: Sequence[dict[str, Any]], columns: Sequence[str], output: Path | None):
    """Prints `rows` as a table of `columns` and writes `figures` (which holds the rows) to `output` as JSON."""
    header = " | ".join(columns)
    print(f"| {header} |\n|{'---|' * len(columns)}")
    for row in rows:
        cells = [_cell(row.get(column)) for column in columns]
        print(f"| {' | '.join(cells)} |")
    if output is not None:
        write_figures(figures, output)
        print(f"figures written to {output}")


def write_figures(figures: dict[str, Any], output: Path) -> None:
    """Writes `figures` to `output` as JSON, atomically: a run killed at its time cap leaves the last whole write."""
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, json.dumps(figures, indent=2) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 100 else f"{value:,.0f}"
    return "" if value is None else str(value)
