"""Every file in configs/ on an MNRE-shaped folder (real JPEGs, crops, `.pth` and `.json` mappings), the way a user
runs them: `python run_mre.py configs/paper.yaml [an ablation or level config]` in a fresh process, with tiny local
encoders in place of BERT-base and CLIP ViT-B/32, one epoch and two image-decoding workers. Each run has a timeout, so
a hang fails its test instead of stalling CI. Also: a 2-process `torchrun` training against the 1-process run, and
the paper's config with other Hub encoders (RoBERTa + DINOv2, DeBERTa-v2 + SigLIP), whose model folders load as
remote code and in the pipeline where the project cannot be imported."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hub_encoders import IMAGE_SIZE, save_text_encoder, save_vision_encoder
from isolation import BLOCK_PROJECT_IMPORTS, run_isolated
from mnre_folder import save_tiny_encoders, write_mnre_folder

import run_mre
from modeling_hvformer import HVFormerConfig, HVFormerForRelationExtraction
from processing.entity_marking import FALLBACK_ENTITY_MARKERS
from processing.processing_hvformer import HVFormerProcessor

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


def run_script(
    workspace: dict[str, Path],
    output_dir: Path,
    *args: str,
    launcher: tuple[str, ...] = (),
    encoders: tuple[Path, Path] | None = None,
) -> str:
    """Runs run_mre.py in a new process on the MNRE-shaped folder, with the workspace's BERT and CLIP or the text and
    vision `encoders`; returns its stdout, failing on error or hang."""
    text, vision = encoders or (workspace["text"], workspace["vision"])
    command = [
        *(launcher or (sys.executable,)),
        str(PROJECT / "run_mre.py"),
        *args,
        "--data_dir",
        str(workspace["data"]),
        "--text_model_name_or_path",
        str(text),
        "--vision_model_name_or_path",
        str(vision),
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
    assert "DataLoader will create" not in result.stderr  # the workers fit the machine's cores: no torch warning
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


@pytest.mark.slow
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


@pytest.mark.slow
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


ISOLATED_USE = BLOCK_PROJECT_IMPORTS + textwrap.dedent(
    """
    import ast, json
    from pathlib import Path
    import torch
    from transformers import AutoModel, AutoProcessor, pipeline

    folder, data_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    lines = [ast.literal_eval(line) for line in (data_dir / "mnre_test.txt").read_text().splitlines()[:4]]
    inputs = processor(
        text=[line["token"] for line in lines],
        entity_spans=[[line["h"]["pos"], line["t"]["pos"]] for line in lines],
        images=[str(data_dir / "img_org" / "test" / line["img_id"]) for line in lines],
        is_split_into_words=True,
    )
    with torch.no_grad():
        torch.save(model(**inputs).logits, out / "logits.pt")
    extractor = pipeline("multimodal-relation-extraction", model=str(folder), trust_remote_code=True, device=-1)
    post = {
        "text": " ".join(lines[0]["token"]),
        "subject": lines[0]["h"]["name"],
        "object": lines[0]["t"]["name"],
        "image": str(data_dir / "img_org" / "test" / lines[0]["img_id"]),
    }
    (out / "pipeline.json").write_text(json.dumps(extractor(post, top_k=3)))
    """
)
"""Loads a run's model folder with `AutoModel` / `AutoProcessor` as remote code, encodes 4 test posts (word lists),
saves their logits, and runs the pipeline on the first post (a string)."""

BACKBONES = {
    "roberta+dinov2": ("roberta", "dinov2", ["--object_image_size", "126"]),
    "deberta_v2+siglip": ("deberta_v2", "siglip", ["--object_image_size", "64"]),
}
"""Hub encoder pairs run with configs/paper.yaml: text kind, vision kind, extra arguments (DINOv2's patch is 14, so
its crops are 126 px; the SigLIP run takes 64-px crops, 16 tokens each instead of 64, to keep CI short)."""


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_paper_config_with_other_hub_encoders(workspace, name):
    """A RoBERTa (byte-level BPE, its own `<s>`) + DINOv2 and a DeBERTa-v2 (unigram, no token types) + SigLIP (no
    [CLS]) run: one prediction per test post, markers that RoBERTa's tokenizer does not own chosen and saved, and a
    model folder that `AutoModel` / `AutoProcessor` and the pipeline load where the project cannot be imported, with
    the logits of the project's own classes."""
    text_kind, vision_kind, extra = BACKBONES[name]
    encoders_dir = workspace["root"] / "hub-encoders"
    text = save_text_encoder(text_kind, encoders_dir / text_kind, workspace["data"])
    vision = save_vision_encoder(vision_kind, encoders_dir / vision_kind)
    output_dir = workspace["root"] / f"run-{name}"
    run_script(workspace, output_dir, str(PAPER), "--num_train_epochs", "1", *extra, encoders=(text, vision))

    rows = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"test-{index}" for index in range(24)]
    model_dir = output_dir / run_mre.MODEL_FOLDER
    config = json.loads((model_dir / "config.json").read_text())
    markers = json.loads((model_dir / "processor_config.json").read_text())["entity_markers"]
    assert config["entity_markers"] == markers
    assert markers == (list(FALLBACK_ENTITY_MARKERS) if text_kind == "roberta" else ["<s>", "</s>", "<o>", "</o>"])
    assert set(rows[0]["expert_weights"]) == {markers[0], markers[2]}
    vision_type = {"dinov2": "dinov2", "siglip": "siglip_vision_model"}[vision_kind]
    text_type = {"roberta": "roberta", "deberta_v2": "deberta-v2"}[text_kind]
    assert (config["text_config"]["model_type"], config["vision_config"]["model_type"]) == (text_type, vision_type)
    assert config["vision_levels"] == [0, 6, 12] and config["image_size"] == IMAGE_SIZE

    work = workspace["root"] / f"isolated-{name}"
    work.mkdir()
    run_isolated(ISOLATED_USE, str(model_dir), str(workspace["data"]), str(work), cwd=work)
    model = HVFormerForRelationExtraction.from_pretrained(model_dir).eval()
    processor = HVFormerProcessor.from_pretrained(model_dir)
    lines = [ast.literal_eval(line) for line in (workspace["data"] / "mnre_test.txt").read_text().splitlines()[:4]]
    images = [workspace["data"] / "img_org" / "test" / line["img_id"] for line in lines]
    inputs = processor(
        text=[line["token"] for line in lines],
        entity_spans=[[line["h"]["pos"], line["t"]["pos"]] for line in lines],
        images=[str(path) for path in images],
        is_split_into_words=True,
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.testing.assert_close(torch.load(work / "logits.pt", weights_only=True), logits, rtol=0, atol=0)
    post = {"text": " ".join(lines[0]["token"]), "entities": (lines[0]["h"]["name"], lines[0]["t"]["name"])}
    encoding = processor(**post, images=str(images[0]), padding="max_length")
    with torch.no_grad():
        probabilities = model(**encoding).logits.softmax(-1)[0]
    ranked = probabilities.argsort(descending=True).tolist()[:3]
    expected = [{"label": config["id2label"][str(i)], "score": pytest.approx(float(probabilities[i]))} for i in ranked]
    assert json.loads((work / "pipeline.json").read_text()) == expected
