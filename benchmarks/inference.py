"""HVFormer inference: batch-1 latency (p50/p90) of the model, the processor's own time per post beside it, and the
evaluation throughput; with the fusion at the marker rows (what the pipeline runs) and per token, and on the CPU in
float32, in int8 (`quantization_hvformer.quantize_int8`, what `HVFORMER_QUANTIZE=int8` serves) and under bf16
autocast (fast on CPUs with AVX-512 BF16 or AMX; emulated, and slow, elsewhere).

The model runs in eval mode under `torch.inference_mode`, bf16 autocast on a GPU, inputs already on the device;
the processor encodes one post (words, two entity spans, a 400x300 photo and its object crops) on the CPU. On the
CPU everything runs on one thread, the precisions are timed in turn within each repeat (so that a shared machine's
load falls on each alike), and the evaluation batch is 8 (a GPU's 256 would take many minutes). Compiled
(`--compile`, `--compile-mode`), the model is compiled for static shapes (a graph per batch size and fusion path;
the CPU's int8 model is left out) and the first call of each, compilation included, is reported apart
(`first_call_seconds`) and left out of the figures.

    python benchmarks/inference.py --output inference.json
    python benchmarks/inference.py --compile-mode reduce-overhead    # compiled, CUDA graphs replayed on a GPU
    python benchmarks/inference.py --device cpu      # paper size, one CPU thread: float32, int8, bf16 autocast
    python benchmarks/inference.py --tiny            # CPU smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import copy
import statistics
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BertTokenizerFast, CLIPImageProcessor, CLIPImageProcessorPil
from transformers.utils import is_torchvision_available

from benchmarks import common
from modeling_hvformer.quantization_hvformer import quantize_int8
from processing import HVFormerProcessor

PAPER = {"text_length": 80, "eval_batch_size": 256, "latency_repeats": 200, "eval_batches": 20, "warmup": 10}
PAPER_CPU = {"text_length": 80, "eval_batch_size": 8, "latency_repeats": 15, "eval_batches": 2, "warmup": 2}
TINY = {"text_length": 16, "eval_batch_size": 8, "latency_repeats": 5, "eval_batches": 2, "warmup": 1}
POST = "Corra Vane and Tamsin Holt at Harbor Square today with the whole crew , great night".split()
ENTITY_SPANS = [(0, 2), (3, 5)]
"""Word spans of the subject and the object in `POST`."""
COLUMNS = [
    "what",
    "fusion_rows",
    "precision",
    "batch_size",
    "p50_ms",
    "p90_ms",
    "samples_per_second",
    "vs_float32",
    "first_call_seconds",
]


def processor_for(config: Any) -> HVFormerProcessor:
    """A processor of the model's image size: a WordPiece vocabulary of the post's words, the CLIP image processor."""
    words = sorted({word.lower() for word in POST})
    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    size = config.vision_config.image_size
    image_processor_class = CLIPImageProcessor if is_torchvision_available() else CLIPImageProcessorPil
    return HVFormerProcessor(
        image_processor=image_processor_class(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=BertTokenizerFast(vocab=vocab),
        max_length=config.text_config.max_position_embeddings,
        num_object_crops=config.num_object_crops,
        object_image_size=config.object_image_size,
    )


CPU_BF16 = "bf16 autocast (CPU)"
"""The CPU precision that runs the float32 model under `torch.autocast("cpu", torch.bfloat16)`."""


def percentiles(seconds: list[float]) -> dict[str, float]:
    milliseconds = sorted(1000 * value for value in seconds)
    return {"p50_ms": statistics.median(milliseconds), "p90_ms": float(np.percentile(milliseconds, 90))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.argument_parser(__doc__.split("\n\n")[0])
    common.add_compile_arguments(parser, "the model (not the CPU's int8 one)")
    args = parser.parse_args(argv)
    device = common.prepare(args)
    settings = TINY if args.tiny else PAPER_CPU if device.type == "cpu" else PAPER
    if device.type == "cpu":
        torch.set_num_threads(1)
    model = common.build_model(args.tiny, device).eval()
    if device.type == "cpu":
        models = {"float32": model, "int8": quantize_int8(copy.deepcopy(model)), CPU_BF16: model}
    else:
        models = {"bf16 autocast": model}
    if common.compile_settings(args)["compile"]:  # dynamically quantized int8 Linear layers are eager-only
        models = {
            precision: common.compiled(model, args) for precision, model in models.items() if precision != "int8"
        }

    processor = processor_for(model.config)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    crops = [photo.crop((40 * k, 30 * k, 40 * k + 150, 30 * k + 120)) for k in range(model.config.num_object_crops)]

    def encode() -> None:
        processor(text=POST, entity_spans=ENTITY_SPANS, images=photo, object_crops=crops, is_split_into_words=True)

    common.timed(encode, torch.device("cpu"), settings["warmup"])
    rows = [
        {
            "what": "processor, one post (CPU)",
            **percentiles(common.timed(encode, torch.device("cpu"), settings["latency_repeats"])),
        }
    ]

    single = common.synthetic_batch(model.config, 1, settings["text_length"], device)
    evaluation = common.synthetic_batch(
        model.config, settings["eval_batch_size"], settings["text_length"], device, seed=1
    )
    for marker_rows in (True, False):
        fusion_rows = "markers" if marker_rows else "all"

        def forward(precision: str, batch: dict[str, torch.Tensor], marker_rows: bool = marker_rows) -> None:
            mixed = torch.autocast("cpu", torch.bfloat16) if precision == CPU_BF16 else common.autocast(device)
            with torch.inference_mode(), mixed:
                models[precision](**batch, output_expert_weights=not marker_rows)

        latencies: dict[str, list[float]] = {precision: [] for precision in models}
        evaluations: dict[str, list[float]] = {precision: [] for precision in models}
        first_calls = {
            (precision, size): common.timed(lambda p=precision, b=batch: forward(p, b), device, 1)[0]
            for precision in models
            for size, batch in ((1, single), (settings["eval_batch_size"], evaluation))
        }
        for _ in range(settings["warmup"] - 1):
            for precision in models:
                forward(precision, single)
        for precision in models:
            forward(precision, evaluation)
        # The precisions in turn, so that any other load on the machine falls on each alike.
        for _ in range(settings["latency_repeats"]):
            for precision in models:
                latencies[precision] += common.timed(lambda p=precision: forward(p, single), device, 1)
        for _ in range(settings["eval_batches"]):
            for precision in models:
                evaluations[precision] += common.timed(lambda p=precision: forward(p, evaluation), device, 1)
        for precision in models:
            rows.append(
                {
                    "what": "model latency",
                    "fusion_rows": fusion_rows,
                    "precision": precision,
                    "batch_size": 1,
                    **percentiles(latencies[precision]),
                    "first_call_seconds": first_calls[precision, 1],
                }
            )
        for precision in models:
            rows.append(
                {
                    "what": "evaluation throughput",
                    "fusion_rows": fusion_rows,
                    "precision": precision,
                    "batch_size": settings["eval_batch_size"],
                    "samples_per_second": settings["eval_batch_size"]
                    * settings["eval_batches"]
                    / sum(evaluations[precision]),
                    "first_call_seconds": first_calls[precision, settings["eval_batch_size"]],
                }
            )
    _compare_with_float32(rows)
    figures = {
        "benchmark": "inference",
        "environment": common.environment(device),
        "settings": {
            **settings,
            "tiny": args.tiny,
            "threads": torch.get_num_threads(),
            **common.compile_settings(args),
        },
        "rows": rows,
    }
    common.report(figures, rows, COLUMNS, args.output)
    return figures


def _compare_with_float32(rows: list[dict[str, Any]]) -> None:
    """Adds `vs_float32` to each CPU int8 and bf16 row: the float32 p50 / its p50, or its / float32 samples/s (the
    speed-up, > 1 when it is faster)."""
    float32 = {(row["what"], row["fusion_rows"]): row for row in rows if row.get("precision") == "float32"}
    for row in rows:
        if row.get("precision") in ("int8", CPU_BF16):
            reference = float32[row["what"], row["fusion_rows"]]
            if "p50_ms" in row:
                row["vs_float32"] = reference["p50_ms"] / row["p50_ms"]
            else:
                row["vs_float32"] = row["samples_per_second"] / reference["samples_per_second"]


if __name__ == "__main__":
    main()
