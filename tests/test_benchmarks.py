"""The benchmarks' `--tiny` CPU modes as smoke tests: each runs and writes its figures in the documented schema.
No timing is asserted; the figures of a CPU smoke run are not performance claims."""

from __future__ import annotations

import json
import math

import torch

from benchmarks import end_to_end, inference, train_step

ENVIRONMENT_KEYS = {"device", "device_type", "torch", "transformers", "python", "commit", "command"}


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
        assert all(positive(row[key]) for key in ("samples_per_second", "step_ms", "flops_per_sample", "mfu"))
        assert row["peak_memory_gib"] is None  # no GPU
        assert ("vs_encoders" in row) == (row["what"] != "encoders")
    flops = {row["what"]: row["flops_per_sample"] for row in rows}
    assert flops["encoders"] < flops["hvformer_marker_rows"] < flops["hvformer_per_token"]
    assert "| hvformer_marker_rows | 4 |" in printed


def test_inference_tiny(tmp_path, capsys):
    figures, printed = run(inference, tmp_path, capsys)
    rows = figures["rows"]
    assert [(row["what"], row.get("fusion_rows")) for row in rows] == [
        ("processor, one post (CPU)", None),
        ("model latency", "markers"),
        ("evaluation throughput", "markers"),
        ("model latency", "all"),
        ("evaluation throughput", "all"),
    ]
    for row in rows:
        if "p50_ms" in row:
            assert positive(row["p50_ms"]) and row["p90_ms"] >= row["p50_ms"]
        else:
            assert positive(row["samples_per_second"]) and row["batch_size"] == 8
    assert "| model latency | markers | 1 |" in printed


def test_end_to_end_tiny(tmp_path, capsys):
    figures, printed = run(end_to_end, tmp_path, capsys)
    stages = {row["stage"]: row for row in figures["rows"]}
    assert len(stages) == 7 and all(isinstance(row["seconds"], float) for row in stages.values())
    assert positive(stages["train, 1 epoch"]["samples_per_second"])
    assert stages["warm run, wall"]["seconds"] > stages["train, 1 epoch"]["seconds"]
    assert figures["settings"]["train"] == 16 and "| train, 1 epoch |" in printed
