"""Tests of `analysis.cli`: `python -m analysis --model DIR ...` on a saved model (Fig. 4 by command line is in
`test_level_f1.py`)."""

from __future__ import annotations

import json

from analysis.cli import main

pytest_plugins = ["_analysis_fixtures"]


def test_command_line_analyses_a_saved_model(model_dir, sample_dir, tmp_path):
    results = main(
        [
            "--model", str(model_dir), "--data_dir", str(sample_dir), "--split", "val", "--output_dir",
            str(tmp_path / "analysis"), "--max_examples", "3", "--tsne_examples", "0", "--cache_dir",
            str(tmp_path / "cache"), "--device", "cpu",
        ]
    )  # fmt: skip
    assert results["setup"]["num_examples"] == 3
    assert json.loads((tmp_path / "analysis" / "analysis.json").read_text())["setup"]["num_examples"] == 3
    assert "fig9a_expert_weights_history" in results["skipped"]  # no history in the model folder
    assert results["skipped"]["fig8_tsne"] == "tsne_examples=0"
    assert set(results["figures"]) == {"fig5a", "fig5b", "fig6", "fig7", "fig7c", "fig9b", "fig10"}  # defaults used
