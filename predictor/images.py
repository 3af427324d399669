"""Encoded images (JPEG, PNG, WebP) -> the normalised float tensor a vision model was trained on.

Declared per input in model.json:

    {"name": "image", "image": {"size": [224, 224], "resize": "crop",
                                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}

- `size` [height, width]: what the model takes.
- `resize`: "crop" (default) scales the shorter side to fit, then cuts the centre out;
  "stretch" scales to `size` exactly.
- `channels`: "RGB" (default), "BGR" or "L" (one grey channel); `layout`: "NCHW" (default)
  or "NHWC".
- `mean`, `std`: per channel, on values scaled to 0..1 (defaults 0 and 1).
- `formats`: the encodings accepted (default JPEG, PNG, WEBP); `max_pixels`: the largest
  image accepted before it is decoded (default 40 million), against decompression bombs.

Pillow decodes each image (JPEG at a reduced size first when it is much larger than the
target); the arithmetic is numpy on the whole batch. Pillow releases the GIL while decoding,
so a batch is decoded on several threads.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from PIL import Image, UnidentifiedImageError

from .signature import SignatureError, TensorSpec

DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_PIXELS = 40_000_000
CHANNELS = {"RGB": 3, "BGR": 3, "L": 1}


@dataclass(frozen=True)
class ImageDecoder:
    name: str
    height: int
    width: int
    resize: str = "crop"
    channels: str = "RGB"
    layout: str = "NCHW"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    formats: tuple[str, ...] = DEFAULT_FORMATS
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_settings(cls, name: str, settings: dict[str, Any], where: str) -> ImageDecoder:
        size = settings.get("size")
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in size)
        ):
            raise SignatureError(f"{where}: image 'size' must be [height, width], got {size!r}")
        unknown = set(settings) - {
            "size",
            "resize",
            "channels",
            "layout",
            "mean",
            "std",
            "formats",
            "max_pixels",
        }
        if unknown:
            raise SignatureError(f"{where}: unknown image settings {sorted(unknown)}")
        choices = {"resize": ("crop", "stretch"), "channels": tuple(CHANNELS)}
        choices["layout"] = ("NCHW", "NHWC")
        for key, allowed in choices.items():
            if key in settings and settings[key] not in allowed:
                raise SignatureError(f"{where}: image {key!r} must be one of {list(allowed)}")
        channels = CHANNELS[settings.get("channels", "RGB")]
        stats = {}
        for key, default in (("mean", 0.0), ("std", 1.0)):
            value = settings.get(key, [default] * channels)
            if not (
                isinstance(value, list)
                and len(value) == channels
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            ):
                raise SignatureError(f"{where}: image {key!r} needs {channels} numbers")
            if key == "std" and any(v == 0 for v in value):
                raise SignatureError(f"{where}: image 'std' must not be 0")
            stats[key] = tuple(float(v) for v in value)
        formats = settings.get("formats", list(DEFAULT_FORMATS))
        if not isinstance(formats, list) or not set(formats) <= set(DEFAULT_FORMATS):
            raise SignatureError(f"{where}: image 'formats' must be a subset of {DEFAULT_FORMATS}")
        max_pixels = settings.get("max_pixels", DEFAULT_MAX_PIXELS)
        if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 1:
            raise SignatureError(f"{where}: image 'max_pixels' must be a positive integer")
        return cls(
            name,
            size[0],
            size[1],
            resize=settings.get("resize", "crop"),
            channels=settings.get("channels", "RGB"),
            layout=settings.get("layout", "NCHW"),
            mean=stats["mean"],
            std=stats["std"],
            formats=tuple(formats),
            max_pixels=max_pixels,
        )

    @property
    def spec(self) -> TensorSpec:
        """The tensor the module gets."""
        c = CHANNELS[self.channels]
        shape = (
            (-1, c, self.height, self.width)
            if self.layout == "NCHW"
            else (-1, self.height, self.width, c)
        )
        return TensorSpec(self.name, "FP32", shape, declared_datatype=True, declared_shape=True)

    def decode(
        self, images: np.ndarray, run: Callable[[Callable, Sequence], list]
    ) -> dict[str, np.ndarray]:
        """A BYTES array of encoded images [N] -> {name: float32 [N, ...]}; `run` maps the
        per-image decode over the images (on threads, when the caller has them)."""
        if images.dtype != object:
            raise InvalidInput(
                f"input {self.name!r}: expected encoded images (BYTES: JPEG, PNG or WebP), "
                f"got {images.dtype} numbers"
            )
        flat = images.reshape(-1)
        pixels = (
            np.stack(run(self._pixels, list(enumerate(flat))))
            if flat.size
            else np.zeros((0, self.height, self.width, CHANNELS[self.channels]), np.uint8)
        )
        batch = pixels.astype(np.float32)
        batch *= np.float32(1 / 255)
        batch -= np.asarray(self.mean, np.float32)
        batch /= np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return {self.name: batch}

    def _pixels(self, item: tuple[int, bytes]) -> np.ndarray:
        """One encoded image -> uint8 [height, width, channels], or a 400 naming it."""
        index, data = item
        where = f"input {self.name!r} image {index}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                opened = Image.open(io.BytesIO(data), formats=list(self.formats))
                width, height = opened.size
                if width * height > self.max_pixels:
                    raise InvalidInput(
                        f"{where}: {width}x{height} is {width * height} pixels, more than the "
                        f"{self.max_pixels} this model accepts"
                    )
                mode = "L" if self.channels == "L" else "RGB"
                opened.draft(mode, self._scaled(width, height))
                pixels = np.asarray(self._fit(opened.convert(mode)), dtype=np.uint8)
        except InvalidInput:
            raise
        except (
            UnidentifiedImageError,
            Image.DecompressionBombError,
            Image.DecompressionBombWarning,
        ):
            raise InvalidInput(
                f"{where}: not a {'/'.join(self.formats)} image this server can decode"
            ) from None
        except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data
            raise InvalidInput(f"{where}: corrupt image ({error})") from None
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if self.channels == "BGR":
            pixels = pixels[:, :, ::-1]
        return pixels

    def _scaled(self, width: int, height: int) -> tuple[int, int]:
        """The smallest size the resize step needs, for JPEG's cheap reduced-size decode."""
        if self.resize == "stretch":
            return self.width, self.height
        scale = max(self.width / width, self.height / height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def _fit(self, image: Image.Image) -> Image.Image:
        if self.resize == "stretch":
            return image.resize((self.width, self.height), Image.Resampling.BILINEAR)
        width, height = image.size
        scale = max(self.width / width, self.height / height)
        scaled = (max(self.width, round(width * scale)), max(self.height, round(height * scale)))
        image = image.resize(scaled, Image.Resampling.BILINEAR)
        left = (scaled[0] - self.width) // 2
        top = (scaled[1] - self.height) // 2
        return image.crop((left, top, left + self.width, top + self.height))
