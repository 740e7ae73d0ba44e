"""Tests of `analysis.level_f1`: Fig. 4 from single-level runs, by function and by command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from analysis_helpers import assert_png_drawn

from analysis import plot_level_f1
from analysis.cli import main


def write_run(folder: Path, levels: list[int], **metrics: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "hvformer", "vision_levels": levels}))
    (folder / "all_results.json").write_text(json.dumps({"epoch": 20.0, **metrics}))
    return folder


def test_plot_level_f1(tmp_path):
    run_6 = write_run(tmp_path / "level6", [6], eval_f1=0.71, test_f1=0.69)
    run_0 = write_run(tmp_path / "level0", [0], eval_f1=0.6)
    data = plot_level_f1([run_6, run_0 / "all_results.json"], tmp_path / "fig4.png")
    assert data["levels"] == [0, 6]
    assert data["eval_f1"] == [0.6, 0.71] and data["test_f1"] == [None, 0.69]
    assert json.loads((tmp_path / "fig4.json").read_text()) == data
    assert_png_drawn(tmp_path / "fig4.png")

    explicit = plot_level_f1({12: run_6, 3: run_0}, tmp_path / "explicit.png")
    assert explicit["levels"] == [3, 12] and explicit["eval_f1"] == [0.6, 0.71]

    from_cli = main(["--level_runs", str(run_0), str(run_6), "--output_dir", str(tmp_path / "cli")])
    assert from_cli["eval_f1"] == data["eval_f1"]
    assert_png_drawn(tmp_path / "cli" / "fig4_level_f1.png")

    write_run(tmp_path / "all", [0, 6, 12], eval_f1=0.7)
    with pytest.raises(ValueError, match="single level"):
        plot_level_f1([tmp_path / "all"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="same level"):
        plot_level_f1([run_0, run_0], tmp_path / "bad.png")
