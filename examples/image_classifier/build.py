"""Build the image classifier example: a small CNN exported with torch.export that the
predictor feeds with decoded JPEG/PNG/WebP images, and answers with labels.

    python examples/image_classifier/build.py [OUTPUT_DIR]

(default OUTPUT_DIR: examples/image_classifier/model)

Writes model.pt2 (random weights, seed 0: the example shows the serving, not accuracy),
model.json (the `image` input: 64x64 RGB, ImageNet mean/std), labels.txt, and three sample
images (red.jpg, green.png, blue.webp) to send.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

LABELS = ["red", "green", "blue", "grey"]
SIZE = 64
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


class TinyCNN(torch.nn.Module):
    def __init__(self, classes: int = len(LABELS)) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(32, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).flatten(1))


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = TinyCNN().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    example = torch.zeros(2, 3, SIZE, SIZE)
    program = torch.export.export(model, (example,), dynamic_shapes={"image": {0: batch}})
    torch.export.save(program, str(out / "model.pt2"))
    signature = {
        "inputs": [{"name": "image", "image": {"size": [SIZE, SIZE], "mean": MEAN, "std": STD}}],
        "outputs": [{"name": "logits"}],
    }
    (out / "model.json").write_text(json.dumps(signature, indent=2) + "\n")
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    colours = {"red.jpg": (220, 30, 30), "green.png": (30, 200, 40), "blue.webp": (20, 40, 230)}
    for name, colour in colours.items():
        noise = np.random.default_rng(len(name)).integers(0, 40, (96, 128, 3))
        pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(out / name)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "model"
    print(f"wrote {build(target)}")
