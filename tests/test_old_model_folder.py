"""A model folder saved by an earlier version of the package (a vision encoder's image processor nested in
`processor_config.json`, no `preprocessor_config.json`) loads with today's classes and answers what it answered."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from modeling_hvformer.modeling_hvformer import HVFormerForRelationExtraction
from processing.image_processing_hvformer import HVFormerImageProcessor
from processing.processing_hvformer import HVFormerProcessor

FIXTURE = Path(__file__).parent / "fixtures" / "model_folder_929f41a"


def test_old_model_folder_loads_and_answers_the_same_logits():
    expected = json.loads((FIXTURE / "expected.json").read_text())
    processor = HVFormerProcessor.from_pretrained(FIXTURE / "model")
    model = HVFormerForRelationExtraction.from_pretrained(FIXTURE / "model").eval()
    assert isinstance(processor.image_processor, HVFormerImageProcessor)
    assert (processor.num_object_crops, processor.object_image_size) == (3, 16)
    post = expected["post"]
    inputs = processor(
        text=post["text"],
        entities=(post["subject"], post["object"]),
        images=Image.open(FIXTURE / expected["image"]),
        object_crops=[Image.open(FIXTURE / name) for name in expected["object_crops"]],
    )
    assert inputs["pixel_values"].dtype == torch.uint8
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    assert torch.allclose(logits, torch.tensor(expected["logits"]), atol=1e-6, rtol=0)
