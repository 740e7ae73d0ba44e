"""Every file in configs/ on an MNRE-shaped folder (real JPEGs, crops, `.pth` and `.json` mappings), the way a user
runs them: `python run_mre.py configs/paper.yaml [an ablation or level config]` in a fresh process, with tiny local
encoders in place of BERT-base and CLIP ViT-B/32, one epoch and two image-decoding workers. Each run has a timeout, so
a hang fails its test instead of stalling CI. Also: a 2-process `torchrun` training against the 1-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mnre_folder import save_tiny_encoders, write_mnre_folder

import run_mre
from modeling_hvformer import HVFormerConfig

PROJECT = Path(__file__).resolve().parents[1]
CONFIGS = PROJECT / "configs"
PAPER = CONFIGS / "paper.yaml"
RUN_TIMEOUT = 300
"""Seconds one run may take (about 20-40 s each on 2 CPU cores); a hang in decoding or training fails the test."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("configs")
    data_dir = write_mnre_folder(root / "mnre")
    text, vision = save_tiny_encoders(root / "encoders", data_dir)
    return {"root": root, "data": data_dir, "text": text, "vision": vision, "cache": root / "cache"}


def run_script(workspace: dict[str, Path], output_dir: Path, *args: str, launcher: tuple[str, ...] = ()) -> str:
    """Runs run_mre.py in a new process on the MNRE-shaped folder; returns its stdout, failing on error or hang."""
    command = [
        *(launcher or (sys.executable,)),
        str(PROJECT / "run_mre.py"),
        *args,
        "--data_dir",
        str(workspace["data"]),
        "--text_model_name_or_path",
        str(workspace["text"]),
        "--vision_model_name_or_path",
        str(workspace["vision"]),
        "--output_dir",
        str(output_dir),
        "--cache_dir",
        str(workspace["cache"]),
        "--preprocessing_num_workers",
        "2",
        "--disable_tqdm",
        "true",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        result = subprocess.run(
            command, cwd=workspace["root"], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{' '.join(command)} did not finish in {RUN_TIMEOUT} s:\n{(error.stderr or '')[-3000:]}")
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_every_config_file_parses_into_the_paper_setting():
    """All of configs/, each on top of paper.yaml, gives a valid HVFormerConfig with what its file says."""
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert {path.relative_to(CONFIGS).as_posix() for path in files} >= {"paper.yaml", "levels/level_0.yaml"}
    assert len(files) == 1 + 4 + 13
    for path in files:
        model_args, _, _, training_args = run_mre.parse_args([str(PAPER), str(path)])
        assert training_args.learning_rate == 1e-5 and training_args.per_device_train_batch_size == 32
        levels = model_args.vision_levels
        if path.parent.name == "levels":
            assert levels == [int(path.stem.split("_")[1])]
        config = HVFormerConfig(
            vision_levels=levels,
            num_cross_attention_heads=model_args.num_cross_attention_heads,
            use_text_expert=model_args.use_text_expert,
            visual_context=model_args.visual_context,
            fusion=model_args.fusion,
            num_object_crops=model_args.num_object_crops,
            object_image_size=model_args.object_image_size,
        )
        assert config.vision_levels == levels


RUNS = {
    "paper": ([], True),
    "wo_hvf": (["ablations/wo_hvf.yaml"], False),
    "wo_mome": (["ablations/wo_mome.yaml"], False),
    "wo_text_expert": (["ablations/wo_text_expert.yaml"], False),
    "wo_tva": (["ablations/wo_tva.yaml"], False),
    "level_0": (["levels/level_0.yaml"], True),
    "level_6": (["levels/level_6.yaml"], False),
    "level_12": (["levels/level_12.yaml"], False),
}
"""Configs run end to end (on top of paper.yaml), and whether with `--do_analysis`."""


@pytest.mark.parametrize("name", list(RUNS))
def test_config_runs_end_to_end(workspace, name):
    extra, analysis = RUNS[name]
    output_dir = workspace["root"] / f"run-{name}"
    config_files = [str(PAPER), *(str(CONFIGS / path) for path in extra)]
    run_script(
        workspace,
        output_dir,
        *config_files,
        "--num_train_epochs",
        "1",
        *(["--do_analysis", "true"] if analysis else []),
    )
    results = json.loads((output_dir / "all_results.json").read_text())
    for key in ("eval_f1", "test_f1", "test_precision", "test_recall", "test_accuracy"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["train_examples_with_crops"] == 38 and results["test_images_loaded"] == 24

    rows = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"test-{index}" for index in range(24)]
    config = json.loads((output_dir / run_mre.MODEL_FOLDER / "config.json").read_text())
    model_args, *_ = run_mre.parse_args(config_files)
    assert config["vision_levels"] == model_args.vision_levels
    assert (config["fusion"], config["visual_context"], config["use_text_expert"]) == (
        model_args.fusion,
        model_args.visual_context,
        model_args.use_text_expert,
    )
    assert ("expert_weights" in rows[0]) == (config["fusion"] == "mome")
    assert (output_dir / run_mre.MODEL_FOLDER / "model.safetensors").is_file()
    if analysis:
        figures = json.loads((output_dir / "analysis" / "analysis.json").read_text())
        assert figures and list((output_dir / "analysis").glob("*.png"))


def test_two_processes_train_like_one(workspace):
    """`torchrun --nproc_per_node 2` (gloo, 8 posts a process) against one process with the same global batch of 16.

    The tiny encoders and HVFormer run without dropout and in float32, and both runs see the same shuffled order
    (accelerate shards each global batch across the processes), so the two trainings differ only by the order of
    floating-point sums (DDP averages two half-batch gradients): metrics must be equal and probabilities agree to
    1e-4.
    """
    common = [
        str(PAPER),
        "--num_train_epochs",
        "2",
        "--learning_rate",
        "1e-3",
        "--bf16",
        "false",
        "--hidden_dropout_prob",
        "0",
        "--attention_dropout",
        "0",
        "--dataloader_num_workers",
        "0",
    ]
    single_dir, double_dir = workspace["root"] / "one-process", workspace["root"] / "two-processes"
    single_out = run_script(workspace, single_dir, *common, "--per_device_train_batch_size", "16")
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29631")
    double_out = run_script(workspace, double_dir, *common, "--per_device_train_batch_size", "8", launcher=torchrun)

    single = json.loads((single_dir / "all_results.json").read_text())
    double = json.loads((double_dir / "all_results.json").read_text())
    for key in ("eval_precision", "eval_recall", "eval_f1", "test_precision", "test_recall", "test_f1"):
        assert double[key] == single[key], key
    state = json.loads((double_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 2 * 48 // 16
    rows = {
        name: [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        for name, folder in (("one", single_dir), ("two", double_dir))
    }
    assert len(rows["two"]) == 24 and [row["id"] for row in rows["two"]] == [row["id"] for row in rows["one"]]
    for one, two in zip(rows["one"], rows["two"], strict=True):
        assert two["predicted"] == one["predicted"]
        for label, probability in one["probabilities"].items():
            assert two["probabilities"][label] == pytest.approx(probability, abs=1e-4)
    assert double_out.count("validation:") == 1 and single_out.count("validation:") == 1
    models = [path.parent.name for path in double_dir.glob("*/model.safetensors")]
    assert models == [run_mre.MODEL_FOLDER]  # one model folder; the finished run's checkpoints are gone
