"""Helpers of the analysis tests: the tiny random model on the built-in sample dataset (ViT 32x32 / patch 8, two
16x16 crops: n_V = 1 + 16 + 2 x 4 = 25), a training history, and a check that a PNG is drawn. The fixtures built on
them are in `_analysis_fixtures.py`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mre_data.sample_data import SAMPLE_RELATIONS

RELATIONS = ["None", *SAMPLE_RELATIONS]
NUM_CROPS = 2
MAIN_TOKENS = 1 + (32 // 8) ** 2


def assert_png_drawn(path: Path, min_width: int = 300, min_height: int = 200) -> None:
    """The PNG opens, is not tiny and is not blank (varied pixels, many colours)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_width and image.height >= min_height, image.size
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10.0, f"{path.name} looks blank"
    colours = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]
    assert len(np.unique(colours)) > 20, f"{path.name} has too few colours"


HISTORY = {
    "expert_names": ["text", "level_0", "level_1", "level_2"],
    "history": [
        {"epoch": 1.0, "step": 2, "count": 8, "<s>": [0.4, 0.2, 0.2, 0.2], "<o>": [0.3, 0.3, 0.2, 0.2]},
        {"epoch": 2.0, "step": 4, "count": 8, "<s>": [0.1, 0.3, 0.3, 0.3], "<o>": [0.1, 0.2, 0.5, 0.2]},
    ],
}
