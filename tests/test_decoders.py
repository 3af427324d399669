"""The image and text decoders against references computed here independently, and the
model.json mistakes they turn into one clear load error."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from kserve.errors import InvalidInput
from PIL import Image

from predictor.images import ImageDecoder
from predictor.loader import ModelLoadError
from predictor.model import ModelOptions, TorchModel
from predictor.signature import SignatureError
from tests.serving import REPO_ROOT


def serial(function, items):
    return [function(item) for item in items]


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def batch(*encoded: bytes) -> np.ndarray:
    array = np.empty(len(encoded), dtype=object)
    array[:] = list(encoded)
    return array


def test_a_constant_image_becomes_its_normalised_colour():
    decoder = ImageDecoder.from_settings(
        "image", {"size": [8, 8], "mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 1.0]}, "t"
    )
    colour = np.array([255, 51, 102])
    (out,) = decoder.decode(batch(png(np.tile(colour, (8, 8, 1)))), serial).values()
    assert out.shape == (1, 3, 8, 8) and out.dtype == np.float32
    expected = (colour / 255 - np.array([0.5, 0.25, 0.0])) / np.array([0.5, 0.25, 1.0])
    np.testing.assert_allclose(out[0, :, 3, 3], expected, rtol=1e-6)


def test_crop_keeps_the_centre_and_stretch_keeps_everything():
    # 32 wide x 16 high: left quarter red, middle half green, right quarter blue.
    pixels = np.zeros((16, 32, 3))
    pixels[:, :8, 0] = 255
    pixels[:, 8:24, 1] = 255
    pixels[:, 24:, 2] = 255
    encoded = batch(png(pixels))
    crop = ImageDecoder.from_settings("i", {"size": [16, 16], "layout": "NHWC"}, "t")
    (cropped,) = crop.decode(encoded, serial).values()
    assert cropped.shape == (1, 16, 16, 3)
    assert np.all(cropped[0, :, :, 1] == 1.0) and np.all(cropped[0, :, :, [0, 2]] == 0.0)
    stretch = ImageDecoder.from_settings("i", {"size": [16, 16], "resize": "stretch"}, "t")
    (stretched,) = stretch.decode(encoded, serial).values()
    assert stretched[0, 0, 8, 0] == 1.0 and stretched[0, 2, 8, 15] == 1.0


def test_bgr_and_grey_channels():
    pixels = np.tile(np.array([200, 100, 0]), (4, 4, 1))
    bgr = ImageDecoder.from_settings("i", {"size": [4, 4], "channels": "BGR"}, "t")
    (out,) = bgr.decode(batch(png(pixels)), serial).values()
    np.testing.assert_allclose(out[0, :, 0, 0], [0.0, 100 / 255, 200 / 255], rtol=1e-6)
    grey = ImageDecoder.from_settings("i", {"size": [4, 4], "channels": "L"}, "t")
    (out,) = grey.decode(batch(png(pixels)), serial).values()
    assert out.shape == (1, 1, 4, 4)
    # Pillow's ITU-R 601-2 luma: L = R * 299/1000 + G * 587/1000 + B * 114/1000.
    np.testing.assert_allclose(
        out[0, 0, 0, 0], round(200 * 0.299 + 100 * 0.587) / 255, atol=1 / 255
    )


def test_the_pixel_cap_is_checked_before_decoding():
    decoder = ImageDecoder.from_settings("i", {"size": [4, 4], "max_pixels": 100}, "t")
    with pytest.raises(InvalidInput, match=r"11x10 is 110 pixels, more than the 100"):
        decoder.decode(batch(png(np.zeros((10, 11, 3)))), serial)


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({}, "'size' must be [height, width]"),
        ({"size": [8, 8], "mean": [0.5]}, "'mean' needs 3 numbers"),
        ({"size": [8, 8], "std": [1, 0, 1]}, "'std' must not be 0"),
        ({"size": [8, 8], "formats": ["GIF"]}, "'formats' must be a subset"),
        ({"size": [8, 8], "colour": "RGB"}, "unknown image settings ['colour']"),
        ({"size": [8, 8], "layout": "CHW"}, "'layout' must be one of"),
    ],
)
def test_bad_image_settings_are_refused(settings, fragment):
    with pytest.raises(SignatureError) as raised:
        ImageDecoder.from_settings("i", settings, "model.json")
    assert fragment in str(raised.value)


def load_with(tmp_path, signature: dict) -> TorchModel:
    """The bundled doubler with another model.json."""
    (tmp_path / "model.pt").write_bytes((REPO_ROOT / "models/doubler/model.pt").read_bytes())
    (tmp_path / "model.json").write_text(json.dumps(signature))
    model = TorchModel("m", ModelOptions(model_dir=str(tmp_path)))
    model.load()
    return model


@pytest.mark.parametrize(
    "signature, fragment",
    [
        ({"inputs": [{"name": "text", "text": {}}]}, "tokenizer file"),
        (
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [-1, 4], "image": {"size": [8, 8]}}
                ]
            },
            "takes FP32 [-1, 4], but its image settings produce FP32 [-1, 3, 8, 8]",
        ),
        ({"inputs": [{"name": "x", "image": {"size": [8, 8]}, "text": {}}]}, "both image and text"),
    ],
)
def test_decoder_mistakes_in_model_json_stop_the_load(tmp_path, signature, fragment):
    with pytest.raises(ModelLoadError) as raised:
        load_with(tmp_path, signature)
    assert fragment in str(raised.value)


def test_text_feeding_an_input_the_model_lacks_is_refused(tmp_path):
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]")).save(
        str(tmp_path / "tokenizer.json")
    )
    signature = {"inputs": [{"name": "input-0"}, {"name": "text", "text": {}}]}
    with pytest.raises(ModelLoadError) as raised:
        load_with(tmp_path, signature)
    assert "feeds ['input_ids', 'attention_mask'], which the model does not take" in str(
        raised.value
    )
