"""Int8 inference on the CPU: what is quantized, the switches (`quantization_config`, the pipeline's
`model_kwargs`, `HVFORMER_QUANTIZE` for the endpoint handler) and the parity with float32 on trained models: the main
job's model (labels agree on >= 95% of posts, every score within 0.05) and a paper-config model trained on the
MNRE-shaped fixture (test F1 within 1 point)."""

from __future__ import annotations

import ast
import json
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_fixtures import MNRE_DIR
from isolation import BLOCK_PROJECT_IMPORTS, run_isolated
from mnre_folder import PLACES, photo, save_tiny_encoders, write_mnre_folder
from PIL import Image
from test_configs import PAPER, run_script
from tiny_models import tiny_config
from torch import nn
from transformers import AutoConfig, AutoModel, pipeline

import run_mre
from modeling_hvformer import HVFormerForRelationExtraction
from modeling_hvformer.handler import QUANTIZATION_CONFIGS, QUANTIZE_ENV
from modeling_hvformer.pipeline_hvformer import PIPELINE_TASK
from modeling_hvformer.quantization_hvformer import QUANT_METHOD, QUANTIZED_MODULES
from mre_data.mnre import find_crops_mapping, load_crops_mapping, lookup_crops, read_mnre_file
from mre_data.sample_data import build_sample_dataset
from training.metrics import mre_scores

INT8 = {"quant_method": QUANT_METHOD}
MIN_LABEL_AGREEMENT = 0.95
MAX_SCORE_DIFFERENCE = 0.05
MAX_F1_DIFFERENCE = 0.01
PLACE_OR_PERSON = {True: "/per/loc/place_of_residence", False: "/per/per/peer"}
"""The relation of a post of the MNRE-shaped fixture whose object is a place, or a person (see `relabel_by_text`)."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as the benchmark runs the model (two threads on the machine's two shared
    cores also slow every test down)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def main_job(tmp_path_factory) -> Path:
    """The model folder of the main job, `python run_mre.py` (the built-in sample, the script's defaults)."""
    output_dir = tmp_path_factory.mktemp("main-job")
    run_mre.main(["--output_dir", str(output_dir), "--disable_tqdm", "true"])
    return output_dir / run_mre.MODEL_FOLDER


def character_spans(record: dict) -> list[list[int]]:
    """The subject's and the object's `[start, end)` character offsets in the post's words joined by spaces."""
    starts = np.cumsum([0] + [len(word) + 1 for word in record["token"]])
    return [
        [int(starts[entity["pos"][0]]), int(starts[entity["pos"][1]] - 1)] for entity in (record["h"], record["t"])
    ]


def pipeline_posts(data_dir: Path, split: str, num_crops: int) -> tuple[list[dict], list[str]]:
    """The posts of an MNRE-format split as pipeline inputs (text, entity character spans, image and crop paths),
    and their gold relations."""
    crops_mapping = find_crops_mapping([data_dir], split)
    mapping = load_crops_mapping(crops_mapping) if crops_mapping else {}
    posts, gold = [], []
    for record in read_mnre_file(data_dir / f"mnre_{split}.txt", split=split):
        crops = lookup_crops(mapping, record["line_index"], record["img_id"]) or []
        posts.append(
            {
                "text": " ".join(record["token"]),
                "entity_spans": character_spans(record),
                "image": str(data_dir / "img_org" / split / record["img_id"]),
                "object_crops": [str(data_dir / "img_vg" / split / "crops" / name) for name in crops[:num_crops]],
            }
        )
        gold.append(record["relation"])
    return posts, gold


def probabilities(folder: Path, posts: list[dict], quantization_config: dict | None) -> np.ndarray:
    """(posts, labels) probabilities from the model folder's pipeline, in float32 or with `quantization_config`."""
    model_kwargs = {"quantization_config": quantization_config} if quantization_config else {}
    extractor = pipeline(
        PIPELINE_TASK, model=str(folder), trust_remote_code=True, device=-1, model_kwargs=model_kwargs
    )
    label2id = extractor.model.config.label2id
    results = extractor(posts, top_k=len(label2id))
    table = np.zeros((len(posts), len(label2id)))
    for row, relations in enumerate(results):
        for relation in relations:
            table[row, label2id[relation["label"]]] = relation["score"]
    return table


def assert_parity(float32: np.ndarray, int8: np.ndarray) -> None:
    agreement = float((float32.argmax(1) == int8.argmax(1)).mean())
    difference = float(np.abs(float32 - int8).max())
    assert agreement >= MIN_LABEL_AGREEMENT and difference <= MAX_SCORE_DIFFERENCE, (agreement, difference)
    assert difference > 0, "int8 gave float32's scores exactly: nothing was quantized"


def test_int8_quantizes_the_linear_layers_of_the_encoders_and_experts_only(main_job, tmp_path):
    float32 = HVFormerForRelationExtraction.from_pretrained(main_job)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        int8 = HVFormerForRelationExtraction.from_pretrained(main_job, quantization_config=INT8)
    assert [str(warning.message)[:80] for warning in caught] == []
    assert int8.config.quantization_config.quant_method == QUANT_METHOD

    quantized = nn.quantized.dynamic.Linear
    for name, module in float32.named_modules():
        twin = int8.get_submodule(name)
        if isinstance(module, nn.Linear) and name.split(".")[0] in QUANTIZED_MODULES:
            assert type(twin) is quantized and twin.weight().dtype == torch.qint8, name
        elif isinstance(module, (nn.Linear, nn.LayerNorm, nn.Embedding, nn.Conv2d)):
            assert type(twin) is type(module), name
            assert torch.equal(twin.weight, module.weight) and twin.weight.dtype == torch.float32, name
    layers = int8.config.text_config.num_hidden_layers + max(int8.config.vision_levels)  # the ViT layers kept
    per_expert = 4 + 2  # TVA: query, key, value, output (Eq. 4); FFN: W_1, W_2 (Eq. 6)
    num_quantized = sum(type(module) is quantized for module in int8.modules())
    assert num_quantized == 6 * layers + per_expert * len(int8.config.vision_levels)  # BERT and CLIP layers: 6 each
    assert type(int8.classifier.projection) is nn.Linear and type(int8.fusion.router.gate) is nn.Linear

    with pytest.raises(ValueError, match="The model is quantized with hvformer_int8 and is not serializable"):
        int8.save_pretrained(tmp_path / "int8")
    with pytest.raises(ValueError, match="`hvformer_int8` runs on the CPU only, got device_map='auto'"):
        HVFormerForRelationExtraction.from_pretrained(main_job, quantization_config=INT8, device_map="auto")
    with pytest.raises(ValueError, match="`hvformer_int8` loads float32 weights, got dtype=torch.bfloat16"):
        HVFormerForRelationExtraction.from_pretrained(main_job, quantization_config=INT8, dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny random HVFormer saved as a model folder."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny")
    HVFormerForRelationExtraction(tiny_config()).save_pretrained(folder)
    return folder


UNKNOWN_METHOD = (
    r"^`quantization_config` has an unknown quant_method 'hvformer-int8': HVFormer's is 'hvformer_int8' \(int8 on "
    r"the CPU\); transformers also knows aqlm, .*\bbitsandbytes_8bit\b.*\.$"
)


def test_an_unknown_quant_method_is_refused_naming_the_known_ones(tiny_folder, tmp_path):
    """Passed to `from_pretrained`, `AutoModel` or the pipeline, or written in `config.json` (which transformers would
    skip with a log line, loading the model unquantized), a misspelt method is an error that names it."""
    typo = {"quant_method": "hvformer-int8"}
    with pytest.raises(ValueError, match=UNKNOWN_METHOD):
        HVFormerForRelationExtraction.from_pretrained(tiny_folder, quantization_config=typo)
    with pytest.raises(ValueError, match=UNKNOWN_METHOD):
        AutoModel.from_pretrained(tiny_folder, trust_remote_code=True, quantization_config=typo)
    with pytest.raises(ValueError, match=UNKNOWN_METHOD):
        pipeline(
            PIPELINE_TASK, model=str(tiny_folder), trust_remote_code=True, model_kwargs={"quantization_config": typo}
        )
    with pytest.raises(
        ValueError, match=r"^`quantization_config` names no quant_method: HVFormer's is 'hvformer_int8'"
    ):
        HVFormerForRelationExtraction.from_pretrained(tiny_folder, quantization_config={"bits": 8})

    saved = tmp_path / "saved"
    shutil.copytree(tiny_folder, saved)
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "quantization_config": typo}))
    with pytest.raises(ValueError, match=UNKNOWN_METHOD):
        HVFormerForRelationExtraction.from_pretrained(saved)
    with pytest.raises(ValueError, match=UNKNOWN_METHOD):
        AutoConfig.from_pretrained(saved, trust_remote_code=True)


def test_int8_takes_no_options(tiny_folder):
    with pytest.raises(ValueError, match=r"^`hvformer_int8` takes no options, got \['bits'\]\.$"):
        HVFormerForRelationExtraction.from_pretrained(tiny_folder, quantization_config={**INT8, "bits": 4})


def test_int8_agrees_with_float32_on_the_main_jobs_model(main_job):
    """The built-in sample's test posts (pictures and crops) through the pipeline, float32 against int8."""
    posts, _ = pipeline_posts(build_sample_dataset(), "test", num_crops=3)
    assert len(posts) == 100
    assert_parity(probabilities(main_job, posts, None), probabilities(main_job, posts, INT8))


@pytest.mark.skipif(not MNRE_DIR.is_dir(), reason="MNRE text files not available")
def test_int8_agrees_with_float32_on_mnre_validation_text(main_job, tmp_path):
    """40 posts of MNRE's validation text (each with a generated photo; MNRE's images are not here)."""
    records = read_mnre_file(MNRE_DIR / "mnre_val.txt", split="val")
    rng, np_rng = random.Random(0), np.random.default_rng(0)
    posts = []
    for index, record in enumerate(rng.sample(records, 40)):
        image = tmp_path / f"photo{index}.jpg"
        photo(np_rng, 320, 240).save(image)
        posts.append({"text": " ".join(record["token"]), "entity_spans": character_spans(record), "image": str(image)})
    assert_parity(probabilities(main_job, posts, None), probabilities(main_job, posts, INT8))


def relabel_by_text(data_dir: Path) -> None:
    """Gives the MNRE-shaped folder's posts relations that their text tells (its own are drawn by line number, which
    no model can learn, so its test F1 stays 0): by the object, a place or a person."""
    for text_file in data_dir.glob("mnre_*.txt"):
        lines = [ast.literal_eval(line) for line in text_file.read_text(encoding="utf-8").splitlines()]
        for line in lines:
            line["relation"] = PLACE_OR_PERSON[line["t"]["name"] in PLACES]
        text_file.write_text("".join(repr(line) + "\n" for line in lines), encoding="utf-8")


@pytest.mark.slow
def test_int8_test_f1_is_within_one_point_on_the_mnre_shaped_fixture(tmp_path_factory, monkeypatch):
    """configs/paper.yaml with tiny encoders (a 12-layer ViT, levels 0/6/12, 12 heads), trained on the MNRE-shaped
    folder with relations its text tells; the test split's F1 through the pipeline, float32 against int8."""
    root = tmp_path_factory.mktemp("mnre-int8")
    data_dir = write_mnre_folder(root / "mnre", sizes={"train": 96, "val": 24, "test": 48})
    relabel_by_text(data_dir)
    text, vision = save_tiny_encoders(root / "encoders", data_dir)
    workspace = {"root": root, "data": data_dir, "text": text, "vision": vision, "cache": root / "cache"}
    output_dir = root / "run"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two threads on two shared cores take ten times longer
    # Float32 training (bf16 autocast is slow on CPUs without bf16 units), small batches: more steps for the time.
    training = ["--num_train_epochs", "6", "--learning_rate", "1e-3", "--per_device_train_batch_size", "4"]
    run_script(workspace, output_dir, str(PAPER), *training, "--bf16", "false")
    folder = output_dir / run_mre.MODEL_FOLDER

    posts, gold = pipeline_posts(data_dir, "test", num_crops=3)
    labels = json.loads((folder / "config.json").read_text())["label2id"]
    references = [labels[relation] for relation in gold]
    table = {name: probabilities(folder, posts, config) for name, config in (("float32", None), ("int8", INT8))}
    assert_parity(table["float32"], table["int8"])
    scores = {
        name: mre_scores(values.argmax(1).tolist(), references, none_label_id=labels["None"])["f1"]
        for name, values in table.items()
    }
    assert scores["float32"] >= 0.9, scores  # a model that gets relations right, so one flipped prediction moves F1
    assert abs(scores["int8"] - scores["float32"]) <= MAX_F1_DIFFERENCE, scores


ISOLATED_HANDLER = (
    BLOCK_PROJECT_IMPORTS
    + """
import base64, importlib.util, json, os, sys
from pathlib import Path

folder, quantize, image, output_file = sys.argv[1:5]
os.environ["HVFORMER_QUANTIZE"] = quantize  # as an endpoint's settings set it
sys.path.insert(0, folder)
spec = importlib.util.spec_from_file_location("handler", Path(folder) / "handler.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
try:
    handler = module.EndpointHandler(folder)
except ValueError as error:
    Path(output_file).write_text(json.dumps({"error": str(error)}))
    sys.exit(0)
post = {"text": "Alden and Brisk in one picture today .", "entity_spans": [[0, 5], [10, 15]],
        "image": base64.b64encode(Path(image).read_bytes()).decode()}
model = handler.pipeline.model
answer = {
    "relations": handler({"inputs": post, "parameters": {"top_k": 4}}),
    "module": type(model).__module__,
    "linear": sorted({m._get_name() for m in model.text_encoder.modules() if "Linear" in type(m).__name__}),
}
Path(output_file).write_text(json.dumps(answer))
"""
)


@pytest.mark.slow
def test_endpoint_handler_serves_int8_with_hvformer_quantize(main_job, tmp_path):
    """HVFORMER_QUANTIZE=int8 in an isolated process (the model's remote code only): the handler quantizes the model
    and answers as float32 does within the tolerance, printing no deprecation warning; an unknown value is refused."""
    assert QUANTIZE_ENV == "HVFORMER_QUANTIZE" and QUANTIZATION_CONFIGS == {"int8": INT8}
    image = next((build_sample_dataset() / "img_org" / "test").iterdir())
    answers, stderr = {}, {}
    for quantize in ("", "int8", "int4"):
        output = tmp_path / f"answer-{quantize or 'float'}.json"
        result = run_isolated(ISOLATED_HANDLER, str(main_job), quantize, str(image), str(output), cwd=tmp_path)
        answers[quantize], stderr[quantize] = json.loads(output.read_text()), result.stderr
    assert answers["int4"] == {"error": "HVFORMER_QUANTIZE='int4': set it to one of ['int8'] or unset it."}
    assert answers[""]["linear"] == ["Linear"]
    assert answers["int8"]["linear"] == ["DynamicQuantizedLinear", "LinearPackedParams"]
    assert answers["int8"]["module"].startswith("transformers_modules")
    assert "deprecat" not in stderr["int8"].lower(), stderr["int8"][-2000:]
    float32 = {relation["label"]: relation["score"] for relation in answers[""]["relations"]}
    int8 = {relation["label"]: relation["score"] for relation in answers["int8"]["relations"]}
    assert answers["int8"]["relations"][0]["label"] == answers[""]["relations"][0]["label"]
    assert all(abs(int8[label] - float32[label]) <= MAX_SCORE_DIFFERENCE for label in float32)


def test_demo_page_switches_to_int8(main_job, monkeypatch, capsys):
    """`app.py --int8` and `HVFORMER_QUANTIZE=int8` serve the page with the int8 model, whose answer and tracking maps
    the page shows; a wrong value or a GPU device is refused."""
    app = pytest.importorskip("app", reason="the demo needs gradio: pip install -e '.[demo]'")
    served = {}

    class Page:
        def launch(self, **kwargs):
            served["launched"] = True

    monkeypatch.setattr(
        app, "build_demo", lambda model, processor: served.update(model=model, processor=processor) or Page()
    )
    monkeypatch.delenv(QUANTIZE_ENV, raising=False)
    image = Image.open(next((build_sample_dataset() / "img_org" / "test").iterdir())).convert("RGB")
    post = (image, "Alden and Brisk in one picture today .", "Alden", "Brisk")
    answers = {}
    for name, argv, env in (("float32", [], ""), ("--int8", ["--int8"], ""), ("env", [], "int8")):
        monkeypatch.setenv(QUANTIZE_ENV, env)
        served.clear()
        app.main(["--model", str(main_job), *argv])
        assert served["launched"]
        linear = type(served["model"].text_encoder.encoder.layer[0].attention.self.query)
        assert linear is (nn.Linear if name == "float32" else nn.quantized.dynamic.Linear), name
        answers[name] = app.predict(served["model"], served["processor"], *post)
    for name in ("--int8", "env"):
        assert answers[name][1] == answers["float32"][1]  # the relation
        assert answers[name][3].shape == answers["float32"][3].shape  # the explanation figure
        for label, score in answers["float32"][0].items():
            assert answers[name][0][label] == pytest.approx(score, abs=MAX_SCORE_DIFFERENCE)

    for argv, env, message in (
        ([], "int4", "HVFORMER_QUANTIZE='int4': set it to one of \\['int8'\\] or unset it"),
        (["--int8", "--device", "cuda"], "", "int8 runs on the CPU, not on --device cuda"),
    ):
        monkeypatch.setenv(QUANTIZE_ENV, env)
        with pytest.raises(SystemExit):
            app.main(["--model", str(main_job), *argv])
        assert re.search(message, capsys.readouterr().err)
