#!/usr/bin/env python
"""Train, evaluate, predict with and analyse HVFormer on MNRE (or the built-in sample), and push it to the Hub.

Runs unchanged under `python`, `torchrun` and `accelerate launch`:

    python run_mre.py                                   # built-in sample, tiny encoders, no download
    python run_mre.py --output_dir DIR                  # the same, into DIR
    accelerate launch run_mre.py configs/paper.yaml     # the paper's setting on MNRE
    python run_mre.py configs/paper.yaml --seeds 1 2 3  # a config over several seeds, mean ± std

YAML or JSON config files may come first (e.g. configs/paper.yaml configs/ablations/wo_tva.yaml); later files and
the command-line arguments after them override earlier values. Architecture options left out take the defaults of
`HVFormerConfig` and `HVFormerProcessor`.

A run writes into `output_dir`: checkpoints, `trainer_state.json`, `all_results.json`, `predictions.jsonl`,
`expert_weights_history.json`, `analysis/`; and the model repository into `output_dir/model` (what `--push_to_hub`
uploads). A finished run (its results file and model folder read whole) is not repeated, and its checkpoints are
deleted (`--keep_checkpoints` keeps them); an interrupted or damaged one runs again, resuming from its last complete
checkpoint.

One script read top to bottom, as transformers' `run_glue.py`: arguments (`mre_run/command_line.py`), checkpoint
detection, seed, data (`mre_run/sources.py`), model, Trainer, train / evaluate / predict, save.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import IntervalStrategy, Trainer, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from analysis import HISTORY_FILE, ExpertWeightsRecorder, analyse, run_analysis
from modeling_hvformer import HVFormerForRelationExtraction
from mre_data.builtin_encoders import (
    BUILTIN,
    BUILTIN_DESCRIPTIONS,
    BUILTIN_VISION_DEFAULTS,
    build_builtin_text_encoder,
    build_builtin_vision_encoder,
)
from mre_data.collator import ColumnBatches, HVFormerDataCollator, StaticShapes, static_text_lengths
from mre_data.mnre_dataset import (
    image_report,
)
from mre_run.command_line import (
    CONFIG_OPTIONS,
    PROCESSOR_OPTIONS,
    DataArguments,
    ExperimentArguments,
    ModelArguments,
    check_launcher,
    given,
    parse_args,
)
from mre_run.prediction import predict_corpus
from mre_run.sources import (
    DEFAULT_NONE_LABEL,
    DataSource,
    check_data_folder,
    data_source,
    post_files,
    post_image_fingerprints,
    requested_splits,
)
from processing.processing_hvformer import HVFormerProcessor
from training.checkpoints import TrainingLossRecorder, checkpoint_problem, last_valid_checkpoint
from training.console import (
    EpochReport,
    ProgressBar,
    print_analysis_summary,
    print_seed_summary,
    print_summary,
    set_up_logging,
)
from training.hub import MODEL_FOLDER, export_model_folder, hub_ids, push_folder_to_hub
from training.metrics import compute_metrics_fn
from training.model_card import (
    CARD_FACTS_FILE,
    CardFacts,
    encoder_description,
    render_model_card,
    training_environment,
    training_hyperparameters,
)
from training.run_arguments import (
    RUN_ARGUMENTS_FILE,
    record_arguments,
    shaping_arguments,
)
from training.run_files import (
    MANIFEST_FILE,
    brief,
    file_problem,
    manifest_files,
    write_manifest,
    write_text_atomic,
)
from training.run_folder import (
    PREDICTIONS_FILE,
    RESULTS_FILE,
    RUN_FILES,
    check_same_run,
    clear_run,
    finished_run_results,
    remove_checkpoints,
    write_predictions,
)
from training.seed_sweep import seed_output_dir, summarize_seeds

logger = logging.getLogger("run_mre")


def data_collator(processor: HVFormerProcessor, static_shapes: StaticShapes | None = None) -> HVFormerDataCollator:
    """The run's collator: text padded to a multiple of 8 (tensor cores), or to the shapes of `static_shapes`; uint8
    pixels stacked as they are."""
    if static_shapes is not None:
        return HVFormerDataCollator(processor, static_shapes=static_shapes)
    return HVFormerDataCollator(processor, pad_to_multiple_of=8)


def run_static_shapes(processor: HVFormerProcessor, training_args: TrainingArguments) -> StaticShapes:
    """The shapes of a `--static_shapes` run: [`static_text_lengths`] of the processor's maximum length, its crops,
    and the training and the evaluation batch sizes of one process."""
    return StaticShapes(
        text_lengths=static_text_lengths(processor.max_length),
        batch_sizes=(training_args.train_batch_size, training_args.eval_batch_size),
        num_object_crops=processor.num_object_crops,
    )


def build_model_and_processor(
    model_args: ModelArguments,
    relation_labels: list[str],
    words: Callable[[], list[str]],
    work_dir: Path,
    none_label: str | None = DEFAULT_NONE_LABEL,
) -> tuple[HVFormerForRelationExtraction, HVFormerProcessor]:
    """A trained HVFormer (`model_name_or_path`), or a new one from a text and a vision encoder (the built-in tiny
    ones, made in `work_dir`, the text one with a vocabulary of the dataset's `words()`, by default) for
    `relation_labels`, `none_label` its "no relation" class (`None`: every class counts); the processor is checked
    against the model either way."""
    if model_args.model_name_or_path:
        for option in ("entity_markers", "object_detector"):
            if getattr(model_args, option) is not None:
                raise ValueError(
                    f"--{option} with --model_name_or_path: the trained model {model_args.model_name_or_path!r} "
                    f"reads the {option.replace('_', ' ')} its processor was saved with."
                )
        # The processor is checked against the folder's config.json as it loads, so its pixel statistics are the
        # model's; a model saved before the config recorded them gets them from the processor it was trained with.
        processor = HVFormerProcessor.from_pretrained(model_args.model_name_or_path)
        model = HVFormerForRelationExtraction.from_pretrained(
            model_args.model_name_or_path, **processor.pixel_statistics()
        )
        processor.check_matches_model(model.config)
        return model, processor

    text_path, vision_path = model_args.text_model_name_or_path, model_args.vision_model_name_or_path
    processor_defaults: dict[str, Any] = {}
    if text_path == BUILTIN:
        text_path = str(build_builtin_text_encoder(work_dir / "builtin-encoders" / "text", words))
    if vision_path == BUILTIN:
        vision_path = str(build_builtin_vision_encoder(work_dir / "builtin-encoders" / "vision"))
        processor_defaults = dict(BUILTIN_VISION_DEFAULTS)
    processor = HVFormerProcessor.from_text_vision_pretrained(
        text_path,
        vision_path,
        relation_labels=relation_labels,
        **{**processor_defaults, **given(model_args, PROCESSOR_OPTIONS)},
    )
    processor.save_object_detector_weights = model_args.save_object_detector_weights
    crops = {"num_object_crops": processor.num_object_crops, "object_image_size": processor.object_image_size}
    config_kwargs = {name: value for name, value in given(model_args, CONFIG_OPTIONS).items() if name not in crops}
    model = HVFormerForRelationExtraction.from_text_vision_pretrained(
        text_path,
        vision_path,
        processor=processor,
        id2label=dict(enumerate(relation_labels)),
        none_label=none_label,
        **crops,
        **config_kwargs,
    )
    processor.check_matches_model(model.config)
    return model, processor


def marker_expert_weights_fn(config: Any) -> Callable[[Any, torch.Tensor], Any]:
    """`preprocess_logits_for_metrics` for a model with `config`: keeps the logits and, with a router, the expert
    weights G at `<s>` and `<o>` (batch, 2, E). Without a router (`fusion="concat"`) only the logits are kept."""

    def preprocess(outputs: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor) -> Any:
        if isinstance(outputs, torch.Tensor):
            return outputs
        if config.fusion != "mome":
            return outputs[0]
        return outputs[0], outputs[-1]  # logits, marker_expert_weights (the last field of the output)

    return preprocess


def card_encoder(name_or_path: str, modality: str) -> str:
    """How the model card names the run's `modality` ("text" or "vision") encoder."""
    if name_or_path == BUILTIN:
        return BUILTIN_DESCRIPTIONS[modality]
    return encoder_description(name_or_path)


def base_model_names(model_args: ModelArguments) -> list[str]:
    """The Hub ids this run's model starts from, for the model card."""
    if model_args.model_name_or_path:
        names = [model_args.model_name_or_path]
    else:
        names = [model_args.text_model_name_or_path, model_args.vision_model_name_or_path]
    return hub_ids([name for name in names if name != BUILTIN])


def resume_checkpoint(training_args: TrainingArguments, output_dir: Path) -> str | None:
    """`--resume_from_checkpoint` when given (refused when incomplete), else the last complete checkpoint."""
    if training_args.resume_from_checkpoint is not None:
        problem = checkpoint_problem(training_args.resume_from_checkpoint)
        if problem is not None:
            raise ValueError(f"--resume_from_checkpoint {training_args.resume_from_checkpoint}: {problem}")
        return training_args.resume_from_checkpoint
    checkpoint = last_valid_checkpoint(output_dir)
    if checkpoint is not None:
        logger.warning("Resuming from %s", checkpoint)
    return checkpoint


def push(output_dir: Path, training_args: TrainingArguments) -> None:
    """Uploads the run's model folder to `--hub_model_id` (default: the run folder's name), its card rendered for the
    repository's id from the run's card facts."""
    model_dir = output_dir / MODEL_FOLDER
    facts_file = output_dir / CARD_FACTS_FILE
    card = None
    problem = file_problem(facts_file)
    if problem is None:
        facts, config = (
            CardFacts.load(facts_file),
            HVFormerForRelationExtraction.config_class.from_pretrained(model_dir),
        )
        card = partial(render_model_card, facts, config)
    else:
        logger.warning("%s %s: the model folder's README.md is pushed as it is.", facts_file, problem)
    repo_id = push_folder_to_hub(
        model_dir,
        training_args.hub_model_id or output_dir.name,
        token=training_args.hub_token,
        private=training_args.hub_private_repo,
        card=card,
    )
    write_manifest(output_dir, manifest_files(output_dir))  # the card now names the repository
    logger.warning("Pushed %s to https://huggingface.co/%s", model_dir, repo_id)


def find_callback(trainer: Trainer, callback_class: type) -> Any:
    """The trainer's callback of `callback_class` (resuming replaces stateful callbacks by restored copies)."""
    callbacks = trainer.callback_handler.callbacks
    return next((callback for callback in callbacks if isinstance(callback, callback_class)), None)


def analyse_finished_run(
    output_dir: Path, source: DataSource, data_args: DataArguments, split: str, batch_size: int
) -> None:
    """`--do_analysis` on a finished run: its saved model analysed on `split` into `output_dir/analysis`."""
    from analysis.explain import load

    model, processor = load(output_dir / MODEL_FOLDER)
    relation_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    data = source.load_splits(
        processor,
        splits=[split],
        relation_labels=relation_labels,
        cache_dir=data_args.cache_dir,
        **given(data_args, ("use_images", "missing_images", "missing_crops")),
    )
    results = analyse(
        model,
        data[split],
        data_collator(processor),
        output_dir / "analysis",
        batch_size=batch_size,
        history_path=output_dir / HISTORY_FILE,
    )
    print_analysis_summary(results, output_dir / "analysis")


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    experiment_args: ExperimentArguments,
    training_args: TrainingArguments,
    push_to_hub: bool = False,
) -> dict[str, float]:
    """One training / evaluation / prediction run into `training_args.output_dir`; returns its metrics."""
    output_dir = Path(training_args.output_dir)
    model_dir = output_dir / MODEL_FOLDER
    if output_dir.exists() and not output_dir.is_dir():
        raise SystemExit(f"run_mre.py: error: --output_dir {output_dir} is a file, not a folder.")
    splits = requested_splits(training_args)
    check_data_folder(data_args, splits)
    arguments = {**shaping_arguments([model_args, data_args], training_args), **post_image_fingerprints(data_args)}

    # A finished run of the same arguments is not repeated: its results are returned, checkpoints a kill left
    # deleted, its model pushed or analysed. A folder holding a run of other arguments is refused.
    finished = finished_run_results(output_dir)
    if not experiment_args.overwrite_output_dir:
        check_same_run(output_dir, arguments, finished is not None)
        if finished is not None:
            logger.warning("%s holds a finished run of these arguments: not training again.", output_dir)
            if training_args.process_index == 0:
                if not experiment_args.keep_checkpoints:  # those of a run killed before it deleted them
                    remove_checkpoints(output_dir)
                if push_to_hub:
                    push(output_dir, training_args)
                if experiment_args.do_analysis:
                    analyse_finished_run(
                        output_dir,
                        data_source(data_args, training_args),
                        data_args,
                        experiment_args.analysis_split,
                        training_args.per_device_eval_batch_size,
                    )
            return finished
    if training_args.process_index == 0:
        if experiment_args.overwrite_output_dir:
            clear_run(output_dir)
        else:  # a damaged run's manifest: beside the new files it would mark a killed rerun finished
            (output_dir / MANIFEST_FILE).unlink(missing_ok=True)
        record_arguments(output_dir, arguments)
    set_seed(training_args.seed)
    source = data_source(data_args, training_args)  # a finished run returned above reads no data

    # Model and processor (a bad option or encoder is a usage error, not a traceback).
    if not source.relation_labels and not model_args.model_name_or_path:
        raise SystemExit(
            "run_mre.py: error: predicting post files without --train_file needs a trained model "
            "(--model_name_or_path), whose relations the predictions take."
        )
    with training_args.main_process_first(desc="building the model"):
        try:
            model, processor = build_model_and_processor(
                model_args, source.relation_labels, source.words, output_dir, source.none_label
            )
        except (ValueError, OSError) as error:
            raise SystemExit(f"run_mre.py: error: {error}") from error
    relation_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    # Preprocessing: tokenised posts and decoded images, cached; only the splits the run reads. A post file to
    # predict is read a shard at a time when it is predicted (unless the analysis reads the whole split).
    corpus = post_files(data_args).get("test") if training_args.do_predict else None
    if corpus is not None and experiment_args.do_analysis and experiment_args.analysis_split == "test":
        corpus = None
    with training_args.main_process_first(desc="reading and caching the data"):
        data = source.load_splits(
            processor,
            splits=[split for split in splits if not (corpus is not None and split == "test")],
            relation_labels=relation_labels,
            num_proc=data_args.preprocessing_num_workers,
            cache_dir=data_args.cache_dir,
            **given(data_args, ("use_images", "missing_images", "missing_crops")),
        )
    limits = {"train": data_args.max_train_samples, "val": data_args.max_eval_samples}
    limits["test"] = data_args.max_eval_samples
    for split, limit in limits.items():
        if limit is not None and split in data:
            data[split] = data[split].select(range(min(limit, len(data[split]))))
    metrics: dict[str, Any] = {
        f"{split}_{name}": value for split, counts in image_report(data).items() for name, value in counts.items()
    }

    # Trainer: each batch read with one Arrow query (only the model's columns: nothing for Trainer to remove).
    batches = {split: ColumnBatches(dataset) for split, dataset in data.items()}
    training_args.remove_unused_columns = False
    if "val" not in data:  # predicting only: nothing to evaluate during training, nor to select a model on
        training_args.eval_strategy, training_args.load_best_model_at_end = IntervalStrategy.NO, False
    callbacks = [TrainingLossRecorder(), EpochReport()]
    if model.config.fusion == "mome":
        callbacks.append(ExpertWeightsRecorder())
    static_shapes = run_static_shapes(processor, training_args) if experiment_args.static_shapes else None
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=batches.get("train"),
        eval_dataset=batches.get("val"),
        data_collator=data_collator(processor, static_shapes),
        processing_class=processor,
        compute_metrics=compute_metrics_fn(model.config.none_label_id, model.config.id2label),
        preprocess_logits_for_metrics=marker_expert_weights_fn(model.config),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ProgressBar)

    # Training (resumed from the last complete checkpoint), evaluation, prediction. With static shapes a compiled
    # step is compiled once per shape, each with static sizes (what CUDA graphs and Inductor's kernels want), instead
    # of once more with dynamic ones at the second shape it meets.
    compiling_static_shapes = static_shapes is not None and training_args.torch_compile
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False) if compiling_static_shapes else nullcontext():
        if training_args.do_train:
            train_result = trainer.train(resume_from_checkpoint=resume_checkpoint(training_args, output_dir))
            metrics.update(train_result.metrics)
            metrics["train_loss"] = find_callback(trainer, TrainingLossRecorder).mean
            trainer.save_state()
            recorder = find_callback(trainer, ExpertWeightsRecorder)
            if recorder is not None and trainer.is_world_process_zero():
                recorder.save(output_dir / HISTORY_FILE, model.config.expert_names)
        if "val" in data:
            metrics.update(trainer.evaluate(eval_dataset=batches["val"], metric_key_prefix="eval"))
        if corpus is not None:
            try:
                metrics.update(
                    predict_corpus(
                        trainer,
                        processor,
                        Path(corpus),
                        output_dir,
                        output_dir / PREDICTIONS_FILE,
                        shard_size=experiment_args.prediction_shard_size,
                        limit=data_args.max_eval_samples,
                        load_options={
                            "num_proc": data_args.preprocessing_num_workers,
                            **given(data_args, ("use_images", "missing_images")),
                        },
                    )
                )
            except (ValueError, OSError) as error:
                raise SystemExit(f"run_mre.py: error: {brief(error)}") from error
        elif training_args.do_predict:
            prediction = trainer.predict(batches["test"], metric_key_prefix="test")
            metrics.update(prediction.metrics)
            if trainer.is_world_process_zero():
                write_predictions(output_dir / PREDICTIONS_FILE, data["test"], prediction.predictions, model.config)

    # The model folder with its card, the checkpoints deleted, the results file, then the manifest of every file the
    # run wrote, which marks the run finished.
    if trainer.is_world_process_zero():
        facts = CardFacts(
            dataset_name=source.dataset_name,
            dataset_id=source.dataset_id,
            base_models=base_model_names(model_args),
            metrics=metrics,
            hyperparameters=training_hyperparameters(training_args, processor.max_length),
            environment=training_environment(training_args.world_size),
            text_encoder=card_encoder(model_args.text_model_name_or_path, "text"),
            vision_encoder=card_encoder(model_args.vision_model_name_or_path, "vision"),
            demonstration_only=data_args.data_dir is None and data_args.dataset_name is None,
        )
        facts.save(output_dir / CARD_FACTS_FILE)
        card = render_model_card(facts, model.config, training_args.hub_model_id)
        export_model_folder(trainer.model, processor, model_dir, card)
        if not experiment_args.keep_checkpoints:  # a finished run is not resumed; its model folder is what remains
            remove_checkpoints(output_dir)
        write_text_atomic(output_dir / RESULTS_FILE, json.dumps(metrics, indent=4, sort_keys=True) + "\n")
        written = [name for name in (*RUN_FILES, RUN_ARGUMENTS_FILE) if (output_dir / name).is_file()]
        write_manifest(output_dir, [*written, MODEL_FOLDER])
        if push_to_hub:
            push(output_dir, training_args)
    if experiment_args.do_analysis and trainer.is_world_process_zero():
        split = data[experiment_args.analysis_split]
        results = run_analysis(trainer, split, output_dir / "analysis", collator=data_collator(processor))
        print_analysis_summary(results, output_dir / "analysis")
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    check_launcher(os.environ)
    model_args, data_args, experiment_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    set_up_logging(training_args)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # once, at the end, with the card

    if not experiment_args.seeds:
        metrics = run(model_args, data_args, experiment_args, training_args, push_to_hub)
        if training_args.process_index == 0:
            output_dir = Path(training_args.output_dir)
            print_summary(metrics, output_dir, output_dir / MODEL_FOLDER)
        return metrics

    per_seed = {}
    for seed in experiment_args.seeds:
        seed_args = dataclasses.replace(
            training_args, output_dir=str(seed_output_dir(training_args.output_dir, seed)), seed=seed
        )
        if training_args.process_index == 0:
            print(f"seed {seed}: {seed_args.output_dir}/")
        per_seed[seed] = run(model_args, data_args, experiment_args, seed_args, push_to_hub=False)
    summary = summarize_seeds(per_seed, training_args.output_dir)
    if training_args.process_index == 0:
        print_seed_summary(summary, Path(training_args.output_dir), MODEL_FOLDER)
    return summary


if __name__ == "__main__":
    main()
