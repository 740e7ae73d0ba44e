"""`run_mre.py` end to end on a generated MNRE-shaped folder (photo-like JPEGs, object crops): samples/s and the time
of each stage (generate, decode + cache, train, evaluate, the rest).

The folder comes from `tests/mnre_folder.py`'s `write_mnre_folder`. Encoders: random BERT-base and CLIP ViT-B/32
saved from their configurations (the tiny ones of `save_tiny_encoders` with `--tiny`), with a WordPiece vocabulary of
the folder's words. `run_mre.py configs/paper.yaml` runs twice for one epoch, without checkpoints or prediction:
a cold run (empty image cache) and a warm run (cache filled). Decode + cache = cold wall time - warm wall time; train
and evaluate are Trainer's `train_runtime` and `eval_runtime` of the warm run (`all_results.json`), and
`train_samples_per_second` is the rate to compare with the training step's.

    python benchmarks/end_to_end.py --output end_to_end.json [--batch-size 64] [-- extra run_mre.py arguments]
    python benchmarks/end_to_end.py --tiny           # CPU smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import importlib.util
import tempfile
import time
from typing import Any

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast, CLIPVisionConfig, CLIPVisionModel

from benchmarks.common import PROJECT, argument_parser, environment, prepare, report, run_script

PAPER = {"train": 4096, "val": 512, "batch_size": 32, "dataloader_num_workers": 8, "preprocessing_num_workers": 16}
TINY = {"train": 16, "val": 8, "batch_size": 4, "dataloader_num_workers": 0, "preprocessing_num_workers": 2}
COLUMNS = ["stage", "seconds", "samples_per_second"]


def load_mnre_folder_module():
    """`tests/mnre_folder.py`, the generator the tests use, imported by path."""
    spec = importlib.util.spec_from_file_location("mnre_folder", PROJECT / "tests" / "mnre_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_paper_size_encoders(text_dir: Path, vision_dir: Path) -> None:
    """Random BERT-base (vocabulary of the saved tokenizer) and CLIP ViT-B/32 over the tiny encoders' folders."""
    torch.manual_seed(0)
    vocab_size = len(BertTokenizerFast.from_pretrained(text_dir))
    BertModel(BertConfig(vocab_size=vocab_size), add_pooling_layer=False).save_pretrained(text_dir)
    CLIPVisionModel(CLIPVisionConfig()).save_pretrained(vision_dir)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=None, help="per_device_train_batch_size (default 32).")
    parser.add_argument("--train-size", type=int, default=None, help="Generated train posts (default 4096).")
    parser.add_argument("--workdir", type=Path, default=None, help="Folder for data and runs (default: a temp one).")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    settings = dict(TINY if args.tiny else PAPER)
    settings["batch_size"] = args.batch_size or settings["batch_size"]
    settings["train"] = args.train_size or settings["train"]
    device = prepare(args)

    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        mnre_folder = load_mnre_folder_module()
        start = time.perf_counter()
        data_dir = mnre_folder.write_mnre_folder(
            workdir / "mnre", sizes={"train": settings["train"], "val": settings["val"], "test": settings["val"]}
        )
        generate_seconds = time.perf_counter() - start
        text_dir, vision_dir = mnre_folder.save_tiny_encoders(workdir / "encoders", data_dir)
        if not args.tiny:
            save_paper_size_encoders(text_dir, vision_dir)
        arguments = [
            str(PROJECT / "configs" / "paper.yaml"),
            *("--data_dir", str(data_dir), "--cache_dir", str(workdir / "cache")),
            *("--text_model_name_or_path", str(text_dir), "--vision_model_name_or_path", str(vision_dir)),
            *("--num_train_epochs", "1", "--per_device_train_batch_size", str(settings["batch_size"])),
            *("--per_device_eval_batch_size", "256", "--do_predict", "false", "--eval_strategy", "no"),
            *("--save_strategy", "no", "--load_best_model_at_end", "false", "--report_to", "none"),
            *("--dataloader_num_workers", str(settings["dataloader_num_workers"])),
            *("--preprocessing_num_workers", str(settings["preprocessing_num_workers"])),
            *("--disable_tqdm", "true", "--logging_steps", "1000000"),
            *extra,
        ]
        cold_seconds, _ = run_script(arguments, workdir / "run-cold", args.tiny)
        warm_seconds, results = run_script(arguments, workdir / "run-warm", args.tiny)

    train, evaluate = results["train_runtime"], results["eval_runtime"]
    rows = [
        {"stage": "generate the MNRE-shaped folder", "seconds": generate_seconds},
        {"stage": "decode + cache (cold run - warm run)", "seconds": max(cold_seconds - warm_seconds, 0.0)},
        {"stage": "train, 1 epoch", "seconds": train, "samples_per_second": results["train_samples_per_second"]},
        {"stage": "evaluate (val)", "seconds": evaluate, "samples_per_second": results["eval_samples_per_second"]},
        {"stage": "start-up, cache read, save (warm run rest)", "seconds": warm_seconds - train - evaluate},
        {"stage": "warm run, wall", "seconds": warm_seconds, "samples_per_second": settings["train"] / warm_seconds},
        {"stage": "cold run, wall", "seconds": cold_seconds},
    ]
    figures = {
        "benchmark": "end_to_end",
        "environment": environment(device),
        "settings": {**settings, "tiny": args.tiny, "run_mre_arguments": extra},
        "rows": rows,
    }
    report(figures, rows, COLUMNS, args.output)
    return figures


if __name__ == "__main__":
    main()
