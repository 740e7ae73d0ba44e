"""Fig. 4 (RQ1): F1 of model variants with a single expert f_l, against the ViT level l, from their runs' results."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .drawing import new_figure, save_figure, suptitle

__all__ = ["plot_level_f1"]


def _results_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / "all_results.json" if path.is_dir() else path


def _single_level(results_file: Path) -> int:
    """The ViT level of a single-level run, from the `config.json` beside its `all_results.json`."""
    config_file = results_file.parent / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: pass {{level: path}} to give the levels explicitly.")
    levels = json.loads(config_file.read_text()).get("vision_levels")
    if not isinstance(levels, list) or len(levels) != 1:
        raise ValueError(f"{config_file} has vision_levels={levels}; Fig. 4 compares runs with a single level each.")
    return int(levels[0])


def plot_level_f1(
    metrics_files: Mapping[int, str | os.PathLike] | Sequence[str | os.PathLike], output_path: str | os.PathLike
) -> dict[str, Any]:
    """
    Fig. 4 (RQ1): F1 of model variants with a single expert f_l, against the ViT level l.

    Args:
        metrics_files: `{level: path}`, or paths whose level is read from the `vision_levels` (one level) of the
            `config.json` beside each file. A path is a run's `all_results.json` (from `run_mre.py`) or its folder.
            The files hold `eval_f1` and/or `test_f1` as fractions.
        output_path: the PNG to write; the numbers go to the same path with a `.json` suffix.

    Returns:
        `dict`: `levels` (sorted), `eval_f1` and `test_f1` (fractions, `None` where a run lacks one), `files`.
    """
    if isinstance(metrics_files, Mapping):
        runs = [(int(level), _results_file(path)) for level, path in metrics_files.items()]
    else:
        runs = [(_single_level(_results_file(path)), _results_file(path)) for path in metrics_files]
    if not runs:
        raise ValueError("No runs given.")
    levels = [level for level, _ in runs]
    if len(set(levels)) != len(levels):
        raise ValueError(f"Several runs have the same level: {sorted(levels)}.")
    runs.sort()
    metrics = [json.loads(path.read_text()) for _, path in runs]
    data: dict[str, Any] = {"levels": [level for level, _ in runs], "files": [str(path) for _, path in runs]}
    for key in ("eval_f1", "test_f1"):
        data[key] = [None if run.get(key) is None else float(run[key]) for run in metrics]
    if all(value is None for key in ("eval_f1", "test_f1") for value in data[key]):
        raise ValueError(f"None of {data['files']} has eval_f1 or test_f1.")

    figure = new_figure(6.0, 3.8)
    ax = figure.subplots()
    for key, label in (("eval_f1", "validation"), ("test_f1", "test")):
        points = [(level, 100 * f1) for level, f1 in zip(data["levels"], data[key], strict=True) if f1 is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xticks(data["levels"])
    ax.set_xlabel("ViT level l of the single expert f_l")
    ax.set_ylabel("F1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    suptitle(figure, "Fig. 4: F1 of single-level variants")
    output_path = Path(output_path)
    save_figure(figure, output_path)
    output_path.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return data
