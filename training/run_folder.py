"""A run folder's own files: the predictions file, whether the folder holds a finished run (every file its manifest
records, whole), a run of other arguments (refused), and clearing it to start over."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from .hub import MODEL_FOLDER
from .model_card import CARD_FACTS_FILE
from .run_arguments import RUN_ARGUMENTS_FILE, differences, recorded_arguments
from .run_files import MANIFEST_FILE, manifest_files, manifest_problem, write_text_atomic

logger = logging.getLogger(__name__)

RESULTS_FILE = "all_results.json"
"""The run's scores."""
PREDICTIONS_FILE = "predictions.jsonl"
PREDICTION_SHARDS_FOLDER = "predictions.shards"
"""Where a prediction over a post file keeps the shards it has finished until the predictions file is whole."""
TRAINER_STATE_FILE = "trainer_state.json"
HISTORY_FILE = "expert_weights_history.json"
"""The expert weights at the markers over training (`analysis.ExpertWeightsRecorder`)."""
RUN_FILES: tuple[str, ...] = (RESULTS_FILE, PREDICTIONS_FILE, TRAINER_STATE_FILE, HISTORY_FILE, CARD_FACTS_FILE)
"""The files a run writes beside its model folder (each when it applies)."""


def write_predictions(path: Path, dataset: Any, predictions: Any, config: Any) -> None:
    """One JSON line per example, in the dataset's order: id, gold (for labelled examples) and predicted relation,
    probabilities, expert weights at `<s>`/`<o>`; the file is written atomically."""
    logits, marker_weights = (
        (predictions[0], predictions[1]) if isinstance(predictions, tuple) else (predictions, None)
    )
    probabilities = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1).numpy()
    ids = list(dataset["id"])
    if len(probabilities) != len(ids):  # e.g. padding rows left in: every row after them would be misread
        raise ValueError(f"{len(probabilities)} predictions for the {len(ids)} examples of {path.name}")
    markers = (config.entity_markers[0], config.entity_markers[2])
    golds = dataset["labels"] if "labels" in getattr(dataset, "column_names", dataset) else [None] * len(ids)
    lines = []
    for index, (example_id, gold) in enumerate(zip(ids, golds, strict=True)):
        row = {
            "id": example_id,
            **({"gold": config.id2label[int(gold)]} if gold is not None else {}),
            "predicted": config.id2label[int(probabilities[index].argmax())],
            "probabilities": {config.id2label[i]: round(float(p), 6) for i, p in enumerate(probabilities[index])},
        }
        if marker_weights is not None:
            weights = marker_weights[index].tolist()  # Python floats, rounded as the probabilities are
            row["expert_weights"] = {
                marker: {name: round(w, 6) for name, w in zip(config.expert_names, weights[k], strict=True)}
                for k, marker in enumerate(markers)
            }
        lines.append(json.dumps(row) + "\n")
    write_text_atomic(path, "".join(lines))


def finished_run_results(output_dir: Path) -> dict[str, Any] | None:
    """The results of a run that finished in `output_dir`, or `None`.

    Finished means a manifest ([`MANIFEST_FILE`], written last) whose every file (results, predictions, trainer state,
    recorded arguments, each file of the model folder) is there with the size and hash recorded when the run
    finished. Anything less (a kill or a full disk, a file cut short, deleted or changed) is not a finished run: a
    warning names the damaged file and why.
    """
    if not (output_dir / MANIFEST_FILE).exists() and not (output_dir / RESULTS_FILE).exists():
        return None
    problem = manifest_problem(output_dir)
    if problem is None and RESULTS_FILE not in manifest_files(output_dir):
        problem = f"{output_dir / MANIFEST_FILE} does not list {RESULTS_FILE}"
    if problem is not None:
        logger.warning("%s holds no finished run (%s): running it again.", output_dir, problem)
        return None
    return json.loads((output_dir / RESULTS_FILE).read_text(encoding="utf-8"))


def check_same_run(output_dir: Path, arguments: dict[str, Any], finished: bool) -> None:
    """Refuses to go on with a run folder that holds a run (finished, or with checkpoints to resume) of other
    arguments, naming each difference and the two ways out. A folder whose last attempt left nothing to keep (it
    stopped before its first checkpoint, e.g. on a data error) takes the new arguments."""
    if not finished and not any(output_dir.glob("checkpoint-*")):
        return
    recorded = recorded_arguments(output_dir)
    if recorded == arguments:
        return
    if recorded is None:
        what = "a run whose arguments were not recorded"
    else:
        what = "a run of other arguments:\n  " + "\n  ".join(differences(recorded, arguments, limit=5))
    raise SystemExit(
        f"{output_dir} holds {what}\nStart over there with --overwrite_output_dir, or choose another --output_dir."
    )


def remove_checkpoints(output_dir: Path) -> None:
    """Deletes the `checkpoint-*` folders of `output_dir`."""
    for path in output_dir.glob("checkpoint-*"):
        shutil.rmtree(path, ignore_errors=True)


def clear_run(output_dir: Path) -> None:
    """`--overwrite_output_dir`: removes what an earlier run left in `output_dir` (checkpoints, results, model,
    prediction shards)."""
    remove_checkpoints(output_dir)
    shutil.rmtree(output_dir / MODEL_FOLDER, ignore_errors=True)
    shutil.rmtree(output_dir / PREDICTION_SHARDS_FOLDER, ignore_errors=True)
    for name in (*RUN_FILES, MANIFEST_FILE, RUN_ARGUMENTS_FILE):
        (output_dir / name).unlink(missing_ok=True)
