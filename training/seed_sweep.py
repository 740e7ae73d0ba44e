"""Several seeds of one run: where each goes and the mean ± sample standard deviation of its scores, as in the
paper's tables."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .run_files import write_text_atomic

SUMMARY_FILE = "seeds_summary.json"
SCORES: tuple[str, ...] = ("precision", "recall", "f1", "accuracy")


def seed_output_dir(output_dir: str | Path, seed: int) -> Path:
    """The run folder of one seed: `output_dir/seed-N`."""
    return Path(output_dir) / f"seed-{seed}"


def summarize_seeds(per_seed: Mapping[int, Mapping[str, float]], output_dir: str | Path) -> dict[str, Any]:
    """Mean ± sample standard deviation of P / R / F1 / accuracy over the seeds, on the test split when every seed
    has it, else validation; written to `output_dir/seeds_summary.json` (atomically) and returned.

    The scores are fractions in [0, 1] under the keys of `all_results.json` (`test_f1`, ...):
    `{"split": "test", "seeds": [1, 2], "test_f1": {"mean": ..., "std": ..., "values": [...]}, ...}`.
    """
    prefix = "test" if all("test_f1" in metrics for metrics in per_seed.values()) else "eval"
    summary: dict[str, Any] = {"split": "test" if prefix == "test" else "validation", "seeds": sorted(per_seed)}
    for name in SCORES:
        values = [per_seed[seed][f"{prefix}_{name}"] for seed in summary["seeds"]]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[f"{prefix}_{name}"] = {"mean": statistics.fmean(values), "std": std, "values": values}
    write_text_atomic(Path(output_dir) / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary
