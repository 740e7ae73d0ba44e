"""HVFormer demo page (Gradio; a Hugging Face Space runs it as it is).

Upload a picture, type the post, name the subject and the object as they occur in the post: the page shows the
relations with their probabilities, the expert weights G (paper Eq. 9) of the subject and object tokens per ViT
level, and their hierarchical tracking maps (Eq. 18) over the picture. The drawing and the model call are
[`analysis.explain.explain`]'s.

    pip install -e ".[demo]"
    python app.py [--model DIR_OR_HUB_ID] [--host 127.0.0.1] [--port 7860] [--int8]

The model defaults to `$HVFORMER_MODEL`, else to the folder `python run_mre.py` writes
(`outputs/hvformer-sample/model`). `--int8` (or `HVFORMER_QUANTIZE=int8`, as a Space's settings set it) runs it in
int8 on the CPU. The page is served on `--host` (default `$GRADIO_SERVER_NAME`, else 127.0.0.1: this machine only;
a Space sets 0.0.0.0) and `--port` (default `$GRADIO_SERVER_PORT`, else 7860); nothing is fetched from the network.
Its answer is also an API endpoint, `/predict` (`gradio_client.Client(url).predict(image, text, subject, object,
api_name="/predict")`). As a Space, the project's `requirements.txt` installs what the page imports.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

from analysis import expert_label
from analysis.explain import explain, figure_pixels, load
from modeling_hvformer.handler import QUANTIZATION_CONFIGS, QUANTIZE_ENV, quantization_config_from_env, shorten_error
from modeling_hvformer.pipeline_hvformer import MAX_IMAGE_PIXELS, MAX_TEXT_LENGTH
from mre_data.mnre import read_mnre_file
from mre_data.sample_data import build_sample_dataset
from training.hub import MODEL_FOLDER, SAMPLE_RUN_DIR

MODEL_ENV = "HVFORMER_MODEL"
DEFAULT_MODEL = Path(__file__).resolve().parent / SAMPLE_RUN_DIR / MODEL_FOLDER
HOST_ENV, PORT_ENV = "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"
"""The environment variables Gradio (and a Space) use for the address and the port."""
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
API_NAME = "predict"
"""The name of the page's API endpoint (`/predict`)."""
INT8 = QUANTIZATION_CONFIGS["int8"]
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
"""Gradio's default look with the system's fonts (the default theme asks Google's servers for its fonts)."""


def predict(
    model: torch.nn.Module, processor: Any, image: Any, text: str, subject: str, obj: str
) -> tuple[dict[str, float], str, list[list[Any]], np.ndarray]:
    """
    The page's answer for one post: [`explain`] with `entities=[subject, obj]`, within the pipeline's limits
    (`MAX_IMAGE_PIXELS`, `MAX_TEXT_LENGTH`).

    Returns:
        The probabilities `{relation: p}`, the predicted relation, the expert weights as table rows
        `[expert, weight at the subject, weight at the object]` (empty without a router) and the explanation
        figure (the picture with the tracking maps over it, and the expert weights) as an `(H, W, 3)` uint8 image.

    Raises:
        `gr.Error`: for every refused input, with its message: a missing image or field, a subject / object not found
        in the post, an image over the pixel budget, an unreadable file or a text that is not valid Unicode (the
        processor's message); another failure is named with its type.
    """
    fields = (("a picture", image), ("the post", text), ("the subject", subject), ("the object", obj))
    missing = [name for name, value in fields if value is None or not str(value).strip()]
    if missing:
        raise gr.Error(f"Please give {', '.join(missing)}.")
    try:
        result = explain(
            model,
            processor,
            text,
            entities=[subject.strip(), obj.strip()],
            image=image,
            max_text_length=MAX_TEXT_LENGTH,
            max_image_pixels=MAX_IMAGE_PIXELS,
        )
    except ValueError as error:
        raise gr.Error(shorten_error(str(error))) from error
    except Exception as error:  # a service boundary, like the endpoint handler: a message, never a blank error
        raise gr.Error(shorten_error(f"{type(error).__name__} while predicting: {error}")) from error
    weights = result["expert_weights"]
    rows = (
        []
        if weights is None
        else [
            [expert_label(name), *(round(by_expert[name], 4) for by_expert in weights.values())]  # subject, object
            for name in result["expert_names"]
        ]
    )
    return result["probabilities"], result["relation"], rows, figure_pixels(result["figure"])


def sample_examples() -> list[list[str]]:
    """One post of the built-in sample's test split per kind (the relation shown by the picture, told by the text, or
    none), as `[picture path, post, subject, object]` rows for `gr.Examples`; the sample is generated on first use."""
    data_dir = build_sample_dataset()
    first_of_kind: dict[str, dict[str, Any]] = {}
    for record in read_mnre_file(data_dir / "mnre_test.txt", split="test"):
        first_of_kind.setdefault(record["kind"], record)
    return [
        [str(data_dir / "img_org" / "test" / record["img_id"]), " ".join(record["token"]), record["h"]["name"]]
        + [record["t"]["name"]]
        for record in first_of_kind.values()
    ]


def build_demo(model: torch.nn.Module, processor: Any) -> gr.Blocks:
    """The page, for a loaded model and its processor."""
    with gr.Blocks(title="HVFormer: multimodal relation extraction", analytics_enabled=False) as demo:
        gr.Markdown(
            "# HVFormer: what relation does a post with a picture express?\n"
            "Upload the picture, type the post and name the subject and the object exactly as they occur in it."
        )
        with gr.Row():
            with gr.Column():
                # A path, not a decoded picture: the processor sizes the file from its header before decoding it.
                image = gr.Image(label="Picture", type="filepath", image_mode=None, elem_id="image")
                text = gr.Textbox(label="Post", lines=3, elem_id="post")
                subject = gr.Textbox(label="Subject (as in the post)", elem_id="subject")
                obj = gr.Textbox(label="Object (as in the post)", elem_id="object")
                submit = gr.Button("Find the relation", variant="primary", elem_id="submit")
                gr.Examples(
                    sample_examples(),
                    inputs=[image, text, subject, obj],
                    label="Posts of the built-in sample (click one, then Find the relation)",
                    elem_id="examples",
                )
            with gr.Column():
                relation = gr.Textbox(label="Predicted relation", interactive=False, elem_id="relation")
                probabilities = gr.Label(label="Relations and their probabilities", num_top_classes=5)
                experts = gr.Dataframe(
                    headers=["expert", "weight at the subject", "weight at the object"],
                    label="Expert weights per ViT level (how much the router uses each expert, Eq. 9)",
                    interactive=False,
                    elem_id="experts",
                )
        gr.Markdown("### Where the subject and the object look in the picture (tracking maps, Eq. 18)")
        maps = gr.Image(show_label=False, type="numpy", interactive=False, elem_id="maps")
        submit.click(
            lambda *inputs: predict(model, processor, *inputs),
            inputs=[image, text, subject, obj],
            outputs=[probabilities, relation, experts, maps],
            api_name=API_NAME,
        )
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    """`python app.py [--model ...] [--host ...] [--port ...]`: serves the page until interrupted."""
    parser = argparse.ArgumentParser(description="HVFormer demo page")
    parser.add_argument(
        "--model",
        default=os.environ.get(MODEL_ENV, str(DEFAULT_MODEL)),
        help=f"model folder or Hub id (default: ${MODEL_ENV}, else {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get(HOST_ENV, DEFAULT_HOST),
        help=f"address to serve on (default: ${HOST_ENV}, else {DEFAULT_HOST}: this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(PORT_ENV, DEFAULT_PORT)),
        help=f"port (default: ${PORT_ENV}, else {DEFAULT_PORT})",
    )
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--int8", action="store_true", help=f"int8 on the CPU (also with {QUANTIZE_ENV}=int8)")
    args = parser.parse_args(argv)
    try:
        quantization_config = INT8 if args.int8 else quantization_config_from_env()
    except ValueError as error:
        parser.error(str(error))
    if quantization_config is not None and args.device not in (None, "cpu"):
        parser.error(f"int8 runs on the CPU, not on --device {args.device}")
    if args.model == str(DEFAULT_MODEL) and not DEFAULT_MODEL.is_dir():
        parser.error(f"no model at {DEFAULT_MODEL}: train one with `python run_mre.py`, or pass --model")
    device = args.device if quantization_config is None else "cpu"
    model, processor = load(args.model, device, quantization_config=quantization_config)
    build_demo(model, processor).launch(
        server_name=args.host, server_port=args.port, theme=THEME, ssr_mode=False, show_error=True
    )


if __name__ == "__main__":
    main()
