"""The model card of a run: the facts it states (measured results, dataset, encoders, hyperparameters, environment),
kept in the run folder as `model_card.json`, and the card rendered from them and `model_card.md` for a given model id.

The facts are written once, when the run finishes, so that pushing the run later (`--push_to_hub --hub_model_id
USER/NAME`, from any machine) renders the card with the repository's id and the run's own figures.
"""

from __future__ import annotations

import json
import os
import platform
import re
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
import yaml

from .hub import hub_ids
from .run_files import write_text_atomic

MODEL_CARD_TEMPLATE = Path(__file__).with_name("model_card.md")
"""The card's template: the project's `model_card.md`, shipped inside this package (a link to it in the source tree)
so that an installed wheel has it too."""
CARD_FACTS_FILE = "model_card.json"
"""The facts of a finished run's card, in its run folder."""
LOCAL_MODEL_ID = "path/to/model"
"""What the card's snippets load before the model has a Hub id."""
SPLITS: tuple[tuple[str, str], ...] = (("eval", "validation"), ("test", "test"))
"""Metric prefixes of `all_results.json` and the split each one measures."""
SCORES: tuple[str, ...] = ("precision", "recall", "f1", "accuracy")
EXPERTS_LINE: dict[str, str] = {
    "concat": "none (w/o MoME: one FFN)",
    "text": "none (the text-only baseline: no visual path)",
}
"""The card's line on the experts of a model without a router."""


@dataclass
class CardFacts:
    """What a run's model card states besides the model's config.

    Args:
        dataset_name: The dataset as the card names it (a Hub id, a folder's name, `MNRE`, the built-in sample).
        dataset_id: Its Hub dataset id, if it has one (then the card links it in `datasets`).
        base_models: The encoders (or the HVFormer) the run started from; only Hub ids are listed as `base_model`.
        metrics: The run's `all_results.json` (scores as fractions).
        hyperparameters: The training hyperparameters, by name.
        environment: Software versions and the hardware the run trained on.
        text_encoder: The text encoder the run started from, as [`encoder_description`] names it.
        vision_encoder: The vision encoder, likewise.
        demonstration_only: Whether the data only demonstrates the pipeline (the built-in sample).
    """

    dataset_name: str
    dataset_id: str | None
    base_models: list[str]
    metrics: dict[str, float]
    hyperparameters: dict[str, Any]
    environment: dict[str, str]
    text_encoder: str = "(not recorded)"
    vision_encoder: str = "(not recorded)"
    demonstration_only: bool = False

    def save(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CardFacts:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def encoder_description(name_or_path: str) -> str:
    """How the card names an encoder: a Hub id as it is, a local folder by the Hub id its `config.json` records (or
    by its name)."""
    if hub_ids([name_or_path]):
        return f"`{name_or_path}`"
    config_file = Path(name_or_path) / "config.json"
    recorded = ""
    if config_file.is_file():
        recorded = json.loads(config_file.read_text(encoding="utf-8")).get("_name_or_path", "")
    if hub_ids([recorded]):
        return f"`{recorded}` (from a local copy)"
    return f"a local checkpoint (`{Path(name_or_path).name}`)"


def data_statement(facts: CardFacts) -> str:
    """The card's sentence on what the model was trained and tested on, and what that allows."""
    if facts.demonstration_only:
        return (
            f"- It was trained and tested on the {facts.dataset_name} (generated posts with drawn pictures) only: it "
            "shows that the pipeline works end to end. Do not use it for real posts."
        )
    if facts.dataset_name == "MNRE":
        return "- It was trained and tested on MNRE only (English tweets with their pictures, from Twitter)."
    return f"- It was trained and tested on {facts.dataset_name} only."


def training_environment(num_processes: int) -> dict[str, str]:
    """The software versions and the hardware of this process, for the card."""
    if torch.cuda.is_available():
        hardware = f"{num_processes} x {torch.cuda.get_device_name(0)}"
    else:
        hardware = f"{num_processes} CPU process{'es' * (num_processes > 1)} ({platform.machine()})"
    return {
        "hardware": hardware,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


def _dataset_type(facts: CardFacts) -> str:
    """The model-index `dataset.type`: the Hub id, else a slug of the dataset's name (e.g. `mnre`)."""
    return facts.dataset_id or re.sub(r"[^a-z0-9]+", "-", facts.dataset_name.lower()).strip("-")


def _model_index(name: str, facts: CardFacts) -> list[dict[str, Any]]:
    """The `model-index` entries: one result per split the run measured, with its P / R / F1 / accuracy."""
    results = []
    for prefix, split in SPLITS:
        scores = {score: facts.metrics.get(f"{prefix}_{score}") for score in SCORES}
        scores = {score: value for score, value in scores.items() if value is not None}
        if scores:
            results.append(
                {
                    "task": {"type": "visual-question-answering", "name": "Multimodal relation extraction"},
                    "dataset": {"type": _dataset_type(facts), "name": facts.dataset_name, "split": split},
                    "metrics": [
                        {"type": score, "value": round(float(value), 4), "name": score.capitalize()}
                        for score, value in scores.items()
                    ],
                }
            )
    return [{"name": name, "results": results}] if results else []


def _results_table(metrics: dict[str, float]) -> str:
    measured = [(split, prefix) for prefix, split in SPLITS if f"{prefix}_f1" in metrics]
    if not measured:
        return "| (not evaluated) | |"
    header = "| Metric | " + " | ".join(split.capitalize() for split, _ in measured) + " |\n"
    header += "|---|" + "---|" * len(measured) + "\n"
    rows = [
        f"| {name.capitalize()} | " + " | ".join(f"{metrics[f'{prefix}_{name}']:.4f}" for _, prefix in measured) + " |"
        for name in SCORES
        if all(f"{prefix}_{name}" in metrics for _, prefix in measured)
    ]
    return header + "\n".join(rows)


def render_model_card(
    facts: CardFacts, config: Any, model_id: str | None, template: Path = MODEL_CARD_TEMPLATE
) -> str:
    """Fills `model_card.md` (YAML metadata + text) with the run's facts, the model's config and its id.

    `model_id` is the Hub repository id (the title and every snippet use it); `None` before the model has one (the
    snippets then load `LOCAL_MODEL_ID`). `base_model` lists only the base models that are Hub model ids and
    `datasets` only a Hub dataset id; `model-index` holds the measured results whatever the dataset (its `type` is
    the dataset's Hub id or, without one, a slug of its name). Scores are fractions in [0, 1] everywhere.
    """
    name = model_id or f"HVFormer ({facts.dataset_name})"
    metadata: dict[str, Any] = {}
    if base_ids := hub_ids(facts.base_models):
        metadata["base_model"] = base_ids
    if facts.dataset_id:
        metadata["datasets"] = [facts.dataset_id]
    if model_index := _model_index(name, facts):
        metadata["model-index"] = model_index
    hyperparameters = "\n".join(f"| `{key}` | {value} |" for key, value in facts.hyperparameters.items())
    environment = "\n".join(f"| {key} | {value} |" for key, value in facts.environment.items())
    return string.Template(template.read_text(encoding="utf-8")).substitute(
        metadata_block=yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) if metadata else "",
        title=name,
        model_id=model_id or LOCAL_MODEL_ID,
        dataset=facts.dataset_name,
        results_table=_results_table(facts.metrics),
        hyperparameters_table=hyperparameters,
        environment_table=environment,
        data_statement=data_statement(facts),
        text_encoder=facts.text_encoder,
        vision_encoder=facts.vision_encoder if config.fusion != "text" else "none (the text-only baseline)",
        vision_levels=", ".join(map(str, config.vision_levels)) if config.fusion != "text" else "none",
        experts=EXPERTS_LINE.get(config.fusion) or ", ".join(config.expert_names),
        visual_context=config.visual_context,
        num_labels=config.num_labels,
        none_statement=(
            f"`{config.none_label}` means no relation among them"
            if config.none_label is not None
            else 'none of them means "no relation": every pair gets one of them'
        ),
        scored_relations=(
            f"the relations other than `{config.none_label}` (as every published MNRE number)"
            if config.none_label is not None
            else 'all relations (this schema has no "no relation" class)'
        ),
        num_object_crops=config.num_object_crops,
        labels=", ".join(f"`{label}`" for label in config.id2label.values()),
    )


def training_hyperparameters(training_args: Any, max_seq_length: int) -> dict[str, Any]:
    """The hyperparameters of a run, from its `TrainingArguments` and the processor's `max_length`."""
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"
    total_batch = (
        training_args.per_device_train_batch_size
        * training_args.world_size
        * training_args.gradient_accumulation_steps
    )
    return {
        "learning_rate": training_args.learning_rate,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "total_train_batch_size": total_batch,
        "num_train_epochs": training_args.num_train_epochs,
        "warmup_steps": training_args.warmup_steps,
        "lr_scheduler_type": str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
        "optim": str(getattr(training_args.optim, "value", training_args.optim)),
        "weight_decay": training_args.weight_decay,
        "precision": precision,
        "seed": training_args.seed,
        "max_seq_length": max_seq_length,
    }
