"""Inputs the server decodes before the module sees them: images (images.py) and text
(text.py), declared per input in model.json.

Clients send BYTES (encoded images, UTF-8 strings) under the declared name; the default
`TorchModel.preprocess` turns them into the tensors the module takes, on threads when the
work is heavy. Metadata and V1 then describe the inputs as clients send them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from .cpus import available_cpus
from .images import ImageDecoder
from .signature import Signature, SignatureError, TensorSpec
from .text import TextDecoder


class Decoder(Protocol):
    @property
    def name(self) -> str: ...

    def decode(
        self, values: np.ndarray, run: Callable[[Callable, Sequence], list]
    ) -> dict[str, np.ndarray]: ...


class Decoders:
    """The model's decoders, by the input name clients send."""

    def __init__(self, decoders: dict[str, Decoder], feeds: dict[str, list[str]]) -> None:
        self.decoders = decoders
        # Wire input -> the module inputs it produces (an image: itself; text: ids and mask).
        self.feeds = feeds
        self._threads: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None

    def __bool__(self) -> bool:
        return bool(self.decoders)

    def wire_inputs(self, module_inputs: list[TensorSpec]) -> list[TensorSpec]:
        """What clients send, in the module's order: a decoded input is BYTES [-1], and
        stands for every module input it feeds."""
        fed_by = {fed: wire for wire, feeds in self.feeds.items() for fed in feeds}
        wire: list[TensorSpec] = []
        for spec in module_inputs:
            source = fed_by.get(spec.name)
            if source is None:
                wire.append(spec)
            elif all(w.name != source for w in wire):
                wire.append(TensorSpec(source, "BYTES", (-1,)))
        return wire

    async def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named arrays as the protocols decoded them -> named arrays the module takes."""
        if not any(name in self.decoders for name in inputs):
            return inputs
        loop = asyncio.get_running_loop()
        batches, items = self._pools()

        def run(function: Callable, values: Sequence) -> list:
            # Pillow and tokenizers release the GIL: a batch spreads over the cores. Items go
            # to a pool of their own: a batch waiting on its items never holds up the items.
            return list(items.map(function, values)) if len(values) > 1 else [function(values[0])]

        out: dict[str, np.ndarray] = {}
        for name, array in inputs.items():
            decoder = self.decoders.get(name)
            if decoder is None:
                out[name] = array
                continue
            out.update(await loop.run_in_executor(batches, decoder.decode, array, run))
        return out

    def _pools(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        if self._threads is None:
            workers = max(2, available_cpus())
            self._threads = (
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode"),
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode-item"),
            )
        return self._threads


def build_decoders(signature: Signature, model_dir: Path) -> Decoders:
    """The decoders model.json declares, with the module's inputs they produce set (or
    checked) in the signature; a SignatureError says what does not fit."""
    decoders: dict[str, Decoder] = {}
    feeds: dict[str, list[str]] = {}
    where = f"{model_dir}/model.json"
    by_name = {spec.name: i for i, spec in enumerate(signature.inputs)}
    for name, (kind, settings) in signature.decoded.items():
        here = f"{where} input {name!r}"
        if kind == "image":
            image = ImageDecoder.from_settings(name, settings, here)
            index = by_name.get(name)
            if index is None:
                raise SignatureError(
                    f"{where}: image input {name!r} is not an input of the model "
                    f"(it takes {list(by_name)})"
                )
            _check_fits(signature.inputs[index], image.spec, where)
            if not signature.inputs[index].declared_shape:
                signature.inputs[index] = image.spec
            decoders[name] = image
            feeds[name] = [name]
        else:
            text = TextDecoder.from_settings(name, settings, model_dir, here)
            missing = [fed for fed in text.feeds if fed not in by_name]
            if missing:
                raise SignatureError(
                    f"{where}: text input {name!r} feeds {missing}, which the model does not "
                    f"take (it takes {list(by_name)})"
                )
            decoders[name] = text
            feeds[name] = list(text.feeds)
    return Decoders(decoders, feeds)


def _check_fits(declared: TensorSpec, decoded: TensorSpec, where: str) -> None:
    """A declared (or exported) input must accept what the decoder produces."""
    if not declared.declared_shape:
        return
    fits = len(declared.shape) == len(decoded.shape) and all(
        want in (-1, got) or got == -1
        for want, got in zip(declared.shape, decoded.shape, strict=True)
    )
    if not fits or (declared.declared_datatype and declared.datatype != "FP32"):
        raise SignatureError(
            f"{where}: input {declared.name!r} takes {declared.datatype} {list(declared.shape)}, "
            f"but its image settings produce FP32 {list(decoded.shape)}"
        )
