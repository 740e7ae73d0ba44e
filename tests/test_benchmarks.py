"""The benchmarks' `--tiny` CPU modes as smoke tests: each runs and writes its figures in the documented schema.
No timing is asserted; the figures of a CPU smoke run are not performance claims."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import end_to_end, inference, input_pipeline, prediction, run_all, train_step

ENVIRONMENT_KEYS = {
    "device",
    "device_type",
    "cpu",
    "cpu_instruction_sets",
    "torch",
    "transformers",
    "python",
    "commit",
    "command",
}


def positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def run(module, tmp_path, capsys) -> tuple[dict, str]:
    output = tmp_path / "figures.json"
    threads = torch.get_num_threads()  # `--tiny` runs on one thread
    try:
        figures = module.main(["--tiny", "--device", "cpu", "--output", str(output)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(output.read_text()) == json.loads(json.dumps(figures))
    assert figures["environment"].keys() == ENVIRONMENT_KEYS and figures["environment"]["device_type"] == "cpu"
    return figures, capsys.readouterr().out


def test_train_step_tiny(tmp_path, capsys):
    figures, printed = run(train_step, tmp_path, capsys)
    assert positive(figures["matmul_peak_flops"])
    rows = figures["rows"]
    assert [(row["what"], row["batch_size"]) for row in rows] == [
        (what, batch) for batch in (2, 4) for what in ("hvformer_per_token", "hvformer_marker_rows", "encoders")
    ]
    for row in rows:
        keys = ("samples_per_second", "step_ms", "flops_per_sample", "mfu", "first_step_seconds")
        assert all(positive(row[key]) for key in keys)
        assert row["peak_memory_gib"] is None  # no GPU
        assert ("vs_encoders" in row) == (row["what"] != "encoders")
    flops = {row["what"]: row["flops_per_sample"] for row in rows}
    assert flops["encoders"] < flops["hvformer_marker_rows"] < flops["hvformer_per_token"]
    assert "| hvformer_marker_rows | 4 |" in printed
    assert figures["finished"] is True


def test_inference_tiny(tmp_path, capsys):
    figures, printed = run(inference, tmp_path, capsys)
    rows = figures["rows"]
    assert [(row["what"], row.get("fusion_rows"), row.get("precision")) for row in rows] == [
        ("processor, one post (CPU)", None, None),
        *[
            (what, fusion_rows, precision)
            for fusion_rows in ("markers", "all")
            for what in ("model latency", "evaluation throughput")
            for precision in ("float32", "int8", inference.CPU_BF16)
        ],
    ]
    for row in rows:
        if "p50_ms" in row:
            assert positive(row["p50_ms"]) and row["p90_ms"] >= row["p50_ms"]
        else:
            assert positive(row["samples_per_second"]) and row["batch_size"] == 8
        assert ("vs_float32" in row) == (row.get("precision") in ("int8", inference.CPU_BF16))
    latency = {(row["fusion_rows"], row["precision"]): row["p50_ms"] for row in rows if row["what"] == "model latency"}
    for row in rows:
        if row.get("precision") in ("int8", inference.CPU_BF16) and row["what"] == "model latency":
            assert row["vs_float32"] == latency[row["fusion_rows"], "float32"] / row["p50_ms"]
    assert figures["settings"]["threads"] == 1
    assert (
        "| model latency | markers | float32 | 1 |" in printed and "| model latency | markers | int8 | 1 |" in printed
    )


@pytest.mark.slow
def test_end_to_end_tiny(tmp_path, capsys):
    figures, printed = run(end_to_end, tmp_path, capsys)
    stages = {row["stage"]: row for row in figures["rows"]}
    assert len(stages) == 7 and all(isinstance(row["seconds"], float) for row in stages.values())
    assert positive(stages["train, 1 epoch"]["samples_per_second"])
    assert stages["warm run, wall"]["seconds"] > stages["train, 1 epoch"]["seconds"]
    assert figures["settings"]["train"] == 16 and "| train, 1 epoch |" in printed


@pytest.mark.slow
def test_prediction_tiny(tmp_path, capsys):
    """The three variants predict the 16 generated posts: the crops variant reads their 3 crops each, the detector
    variant's model crops 3 boxes out of each post's image (its crops counted as the detector's, none read), the
    no-crops variant neither."""
    figures, printed = run(prediction, tmp_path, capsys)
    rows = {row["variant"]: row for row in figures["rows"]}
    assert list(rows) == ["no crops", "crops", "detector"]
    assert all(row["posts"] == 16 and positive(row["posts_per_second"]) for row in rows.values())
    crops = {name: (row["crops_loaded"], row["detector_crops"]) for name, row in rows.items()}
    assert crops == {"no crops": (0, 0), "crops": (48, 0), "detector": (0, 48)}
    assert all(row["wall_seconds"] > row["seconds"] for row in rows.values())
    settings = figures["settings"]
    assert (settings["posts"], settings["detector_posts"], settings["detector"]) == (16, 16, "tiny DETR")
    assert "| crops | 16 |" in printed and "| detector | 16 |" in printed
    assert "detector variant: 16 posts (--detector_posts), detector: tiny DETR" in printed


def test_input_pipeline_tiny(tmp_path, capsys):
    """The host feed through one worker, its parts, and the bytes per sample: uint8 pixels (3 x 224 x 224 + 3 crops of
    3 x 128 x 128 = 297,984 bytes), the long object mask, markers and label (48 bytes) and three long text tensors
    padded to a multiple of 8 tokens (8 to 80 tokens: 192 to 1,920 bytes)."""
    figures, printed = run(input_pipeline, tmp_path, capsys)
    rows = {row["what"]: row for row in figures["rows"]}
    rates = [
        "host feed, one worker",
        "host feed, one worker, per CPU second",
        "fetch alone (main process)",
        "collator alone (main process)",
    ]
    assert list(rows) == [*rates[:2], "bytes to the device per sample", *rates[2:]]
    for what in rates:
        assert positive(rows[what]["samples_per_second"]), what
    assert len(rows["host feed, one worker"]["per_epoch"]) == 3
    megabytes = rows["bytes to the device per sample"]["megabytes_per_sample"]
    assert (297_984 + 48 + 192) / 1e6 <= megabytes <= (297_984 + 48 + 1_920) / 1e6
    assert figures["settings"]["pixel_dtype"] == "torch.uint8" and figures["settings"]["train"] == 16
    assert "| host feed, one worker |" in printed


def test_targets_are_checked_against_hand_made_figures():
    """The speed targets on figures made up so that each side of each threshold is hit; a missing run is reported
    as not measured."""

    def step(what, batch, rate, mfu, ratio):
        return {"what": what, "batch_size": batch, "samples_per_second": rate, "mfu": mfu, "vs_encoders": ratio}

    figures = {
        "train_step": {
            "rows": [
                step("hvformer_marker_rows", 32, 1000.0, 0.10, 0.95),
                step("hvformer_marker_rows", 256, 3000.0, 0.38, 0.97),
                step("hvformer_per_token", 256, 2000.0, 0.50, 0.50),  # not the fast path: ignored
            ]
        },
        "train_step_compiled": {"rows": [step("hvformer_marker_rows", 256, 3300.0, 0.41, 0.92)]},
        "train_step_graphs": {"rows": [step("hvformer_marker_rows", 32, 1100.0, 0.11, 0.93)]},  # CUDA graphs
        "end_to_end_b32": {
            "settings": {"batch_size": 32},
            "rows": [{"stage": "train, 1 epoch", "seconds": 1.0, "samples_per_second": 950.0}],
        },
        "end_to_end_b64": None,
        "inference": {
            "rows": [
                {"what": "model latency", "fusion_rows": "markers", "batch_size": 1, "p50_ms": 7.5, "p90_ms": 9.0},
                {"what": "evaluation throughput", "fusion_rows": "markers", "samples_per_second": 5000.0},
            ]
        },
        "inference_graphs": {
            "rows": [
                {"what": "model latency", "fusion_rows": "markers", "batch_size": 1, "p50_ms": 6.5, "p90_ms": 7.0},
                {"what": "model latency", "fusion_rows": "all", "batch_size": 1, "p50_ms": 1.0, "p90_ms": 1.0},
                {"what": "evaluation throughput", "fusion_rows": "markers", "samples_per_second": 4000.0},
            ]
        },
        "input_pipeline": {
            "rows": [
                {"what": "host feed, one worker", "samples_per_second": 1200.0},
                {"what": "bytes to the device per sample", "megabytes_per_sample": 0.45},
            ]
        },
    }
    checked = {row["target"]: (row["measured"], row["met"]) for row in run_all.check_targets(figures)}
    assert checked == {
        "training step MFU at batch 256": (0.41, True),  # the compiled step, the fastest at the largest batch
        "HVFormer / encoders, lowest over the batch sizes": (0.92, True),
        "run_mre.py train samples/s at batch 32 / the step's": (950 / 1100, False),  # the CUDA-graph step's 1100
        "run_mre.py train samples/s at batch 32": (950.0, False),
        "run_mre.py train samples/s at batch 64 / the step's": (None, None),
        "model batch-1 latency p50, ms": (6.5, True),  # replayed CUDA graphs, marker rows (the pipeline's)
        "evaluation samples/s at the evaluation batch": (5000.0, False),
        "host feed samples/s, one worker thread": (1200.0, True),
        "MB per sample to the device": (0.45, False),
    }


@pytest.mark.slow
def test_a_run_stopped_at_its_cap_is_killed_with_its_children(tmp_path):
    """`run_all`'s time cap kills the benchmark's whole process group: a child it started (as `end_to_end.py` starts
    `run_mre.py` and its workers) must not run on into the next benchmark."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        "open(sys.argv[1], 'w').write(str(subprocess.Popen(['sleep', '60']).pid)); time.sleep(60)"
    )
    start = time.perf_counter()
    with pytest.raises(subprocess.TimeoutExpired):
        run_all.run_capped([sys.executable, "-c", script, str(pid_file)], cap=3)
    assert time.perf_counter() - start < 10
    child = int(pid_file.read_text())
    time.sleep(0.2)
    alive = os.path.exists(f"/proc/{child}") and "Z" not in open(f"/proc/{child}/stat").read().split()[2]
    assert not alive, "the benchmark's child outlived the cap"


def test_cpu_description_reads_the_model_and_the_instruction_sets_that_matter():
    """The first processor's entry of `/proc/cpuinfo`, x86 and Arm: the model name and, of the flags, only the
    instruction sets of `CPU_INSTRUCTION_SETS`, in that order."""
    from benchmarks import common

    x86 = (
        "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni"
        "\n\nprocessor\t: 1\nmodel name\t: another\nflags\t\t: amx_tile\n"
    )
    assert common.cpu_description(x86) == {
        "cpu": "AMD EPYC 9B14",
        "cpu_instruction_sets": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"],
    }
    arm = "processor\t: 0\nFeatures\t: fp asimd sve i8mm bf16 crc32\n\nModel\t\t: Neoverse\n"
    assert common.cpu_description(arm)["cpu_instruction_sets"] == ["asimd", "sve", "bf16", "i8mm"]
    assert common.cpu_description("")["cpu_instruction_sets"] == []


def test_default_caps_fit_a_15_minute_lease_and_name_every_run():
    assert run_all.DEFAULT_CAPS.keys() == run_all.RUNS.keys()
    assert sum(run_all.DEFAULT_CAPS.values()) <= 14 * 60
    assert {"train_step_graphs", "inference_graphs"} <= set(run_all.TINY_RUNS)  # the CUDA-graph runs dry-run on CPU


def test_caps_name_a_run():
    assert run_all._cap("end_to_end_b64=110") == ("end_to_end_b64", 110)
    for bad in ("end_to_end=110", "train_step=ten", "train_step"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=SECONDS with NAME one of train_step, inference"):
            run_all._cap(bad)


@pytest.mark.slow
def test_the_commit_recorded_says_when_the_tree_differs_from_it(tmp_path, monkeypatch):
    from benchmarks import common

    monkeypatch.setattr(common, "PROJECT", tmp_path)
    assert common.git_commit() == "unknown"  # no repository
    author = {f"GIT_{who}_{what}": "a@a" for who in ("AUTHOR", "COMMITTER") for what in ("NAME", "EMAIL")}
    (tmp_path / "model.py").write_text("x = 1\n")
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", *command], cwd=tmp_path, env={**os.environ, **author}, check=True, timeout=30)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert common.git_commit() == head
    (tmp_path / "model.py").write_text("x = 2\n")
    assert common.git_commit() == f"{head}+changes"


@pytest.mark.slow
def test_run_all_passes_the_end_to_end_train_size_and_checks_what_ran(tmp_path, monkeypatch, capsys):
    """`run_all.py --tiny` limited to its end-to-end run: the run gets `--end-to-end-train-size`, its figures and
    `targets.json` are written, and the targets of the runs left out are reported as not measured."""
    monkeypatch.setattr(run_all, "TINY_RUNS", ("end_to_end_b32",))
    targets = run_all.main(
        ["--tiny", "--output-dir", str(tmp_path), "--end-to-end-train-size", "12", "--cap", "end_to_end_b32=300"]
    )
    figures = json.loads((tmp_path / "end_to_end_b32.json").read_text())
    assert figures["settings"]["train"] == 12
    assert json.loads((tmp_path / "targets.json").read_text())["targets"] == targets
    measured = {row["target"]: row["measured"] for row in targets}
    assert measured["host feed samples/s, one worker thread"] is None
    assert "== end_to_end_b32 (at most 300 s):" in capsys.readouterr().out
