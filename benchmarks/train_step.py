"""HVFormer's training step against its two encoders alone on the same inputs: samples/s, MFU and peak memory.

MFU = samples/s x FLOP per sample / the bf16 matmul rate measured in the same run (a loop of large matmuls);
FLOP per sample are counted with `torch.utils.flop_counter.FlopCounterMode` over one forward and backward. Paper
size: BERT-base, CLIP ViT-B/32, levels 0/6/12, 3 crops of 128 px, sequence 80, random weights (no download), bf16
autocast, fused AdamW, inputs already on the device. Compiled (`--compile`, `--compile-mode`), each loss function is
compiled for static shapes (one graph per batch size, as `run_mre.py --static_shapes` gives it); the first step of
each row, compilation included, is reported apart (`first_step_seconds`) and left out of the rates.

    python benchmarks/train_step.py --output train_step.json [--compile] [--compile-mode reduce-overhead]
    python benchmarks/train_step.py --tiny            # CPU smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common

PAPER = {"batch_sizes": [32, 64, 256], "text_length": 80, "warmup": 5, "steps": 20, "matmul_size": 8192}
TINY = {"batch_sizes": [2, 4], "text_length": 16, "warmup": 1, "steps": 2, "matmul_size": 256}
COLUMNS = [
    "what",
    "batch_size",
    "samples_per_second",
    "mfu",
    "flops_per_sample",
    "peak_memory_gib",
    "first_step_seconds",
]


def matmul_peak_flops(device: torch.device, size: int, repeats: int = 20) -> float:
    """FLOP/s of a loop of `size`-square matmuls, bf16 on a GPU, float32 on the CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    common.timed(lambda: a @ b, device, repeats=3)  # warm-up
    (seconds,) = common.timed(lambda: [a @ b for _ in range(repeats)], device, repeats=1)
    return 2 * size**3 * repeats / seconds


def losses(model: torch.nn.Module) -> dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]]:
    """The measured computations: HVFormer with the per-token fusion (the issue's baseline) and with the fusion at
    the marker rows, and the two encoders alone (a mean of their last outputs as the loss)."""

    def encoders(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        text = model.text_encoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).last_hidden_state
        levels, _ = model.vision_encoder(batch["pixel_values"], batch["object_pixel_values"], batch["object_mask"])
        return text.float().mean() + levels[-1].float().mean()

    return {
        "hvformer_per_token": lambda batch: model(**batch, output_expert_weights=True).loss,
        "hvformer_marker_rows": lambda batch: model(**batch, output_expert_weights=False).loss,
        "encoders": encoders,
    }


def flops_per_sample(loss: Callable, batch: dict[str, torch.Tensor], device: torch.device) -> float:
    counter = FlopCounterMode(display=False)
    with counter, common.autocast(device):
        loss(batch).backward()
    return counter.get_total_flops() / batch["input_ids"].shape[0]


def measure(
    step: Callable[[], None], batch_size: int, device: torch.device, warmup: int, steps: int
) -> dict[str, float | None]:
    """Samples/s and ms per step over `steps` steps after `warmup` ones, the peak GPU memory (GiB), and the seconds
    of the first warm-up step (where a compiled step compiles)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    (first,) = common.timed(step, device, repeats=1)
    common.timed(step, device, repeats=max(warmup - 1, 0))
    (seconds,) = common.timed(lambda: [step() for _ in range(steps)], device, repeats=1)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "samples_per_second": batch_size * steps / seconds,
        "step_ms": 1000 * seconds / steps,
        "peak_memory_gib": peak,
        "first_step_seconds": first,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="Default 32 64 256 (tiny: 2 4).")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per measurement (default 20).")
    common.add_compile_arguments(parser, "each loss function")
    args = parser.parse_args(argv)
    settings = dict(TINY if args.tiny else PAPER)
    settings["batch_sizes"] = args.batch_sizes or settings["batch_sizes"]
    settings["steps"] = args.steps or settings["steps"]
    device = common.prepare(args)

    model = common.build_model(args.tiny, device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=device.type == "cuda")
    peak = matmul_peak_flops(device, settings["matmul_size"])
    functions = losses(model)
    counting_batch = common.synthetic_batch(model.config, settings["batch_sizes"][0], settings["text_length"], device)
    flops = {name: flops_per_sample(loss, counting_batch, device) for name, loss in functions.items()}
    model.zero_grad(set_to_none=True)
    functions = {name: common.compiled(loss, args) for name, loss in functions.items()}

    rows: list[dict[str, Any]] = []
    figures = {
        "benchmark": "train_step",
        "environment": common.environment(device),
        "settings": {**settings, **common.compile_settings(args), "tiny": args.tiny},
        "matmul_peak_flops": peak,
        "rows": rows,
        "finished": False,
    }
    for batch_size in settings["batch_sizes"]:
        batch = common.synthetic_batch(model.config, batch_size, settings["text_length"], device)
        measured = []
        for name, loss in functions.items():

            def step(loss=loss, batch=batch) -> None:
                optimizer.zero_grad(set_to_none=True)
                with common.autocast(device):
                    value = loss(batch)
                value.backward()
                optimizer.step()

            timing = measure(step, batch_size, device, settings["warmup"], settings["steps"])
            mfu = timing["samples_per_second"] * flops[name] / peak
            measured.append(
                {"what": name, "batch_size": batch_size, **timing, "flops_per_sample": flops[name], "mfu": mfu}
            )
        encoders = next(row for row in measured if row["what"] == "encoders")
        for row in measured:
            if row is not encoders:
                row["vs_encoders"] = row["samples_per_second"] / encoders["samples_per_second"]
        rows.extend(measured)
        if args.output is not None:  # each batch size as it is done, for a run stopped at its time cap
            common.write_figures(figures, args.output)
    figures["finished"] = True
    print(f"matmul peak: {peak / 1e12:.3g} TFLOP/s")
    common.report(figures, rows, [*COLUMNS, "vs_encoders"], args.output)
    return figures


if __name__ == "__main__":
    main()
