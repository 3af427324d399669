"""UTF-8 strings -> token ids and attention mask, by a Hugging Face `tokenizer.json` shipped
beside the model (the Rust `tokenizers` library: no network, no Python loop per token).

Declared in model.json as an input that is not the module's own but feeds it:

    {"name": "text", "text": {"tokenizer": "tokenizer.json", "max_length": 128,
                              "input_ids": "input_ids", "attention_mask": "attention_mask"}}

- `tokenizer`: the file, relative to the model directory (default tokenizer.json).
- `max_length`: sequences are truncated there (default 512).
- `input_ids` / `attention_mask`: the module inputs that receive the int64 [batch, length]
  tensors, padded to the longest sequence of the batch; `attention_mask` may be null for a
  model that takes ids only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from .signature import SignatureError


@dataclass
class TextDecoder:
    name: str
    tokenizer: Any  # tokenizers.Tokenizer
    max_length: int
    input_ids: str
    attention_mask: str | None

    @property
    def feeds(self) -> tuple[str, ...]:
        return (self.input_ids,) + ((self.attention_mask,) if self.attention_mask else ())

    @classmethod
    def from_settings(
        cls, name: str, settings: dict[str, Any], model_dir: Path, where: str
    ) -> TextDecoder:
        unknown = set(settings) - {"tokenizer", "max_length", "input_ids", "attention_mask"}
        if unknown:
            raise SignatureError(f"{where}: unknown text settings {sorted(unknown)}")
        path = model_dir / str(settings.get("tokenizer", "tokenizer.json"))
        if not path.is_file():
            raise SignatureError(f"{where}: tokenizer file {path} not found")
        max_length = settings.get("max_length", 512)
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise SignatureError(f"{where}: text 'max_length' must be a positive integer")
        ids = settings.get("input_ids", "input_ids")
        mask = settings.get("attention_mask", "attention_mask")
        if not isinstance(ids, str) or not (mask is None or isinstance(mask, str)):
            raise SignatureError(f"{where}: 'input_ids' and 'attention_mask' name model inputs")
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # the Rust side raises plain Exceptions
            raise SignatureError(f"{where}: cannot read tokenizer {path}: {error}") from None
        tokenizer.enable_truncation(max_length)
        tokenizer.enable_padding(pad_id=tokenizer.padding["pad_id"] if tokenizer.padding else 0)
        return cls(name, tokenizer, max_length, ids, mask)

    def decode(
        self, texts: np.ndarray, run: Callable[[Callable, Sequence], list]
    ) -> dict[str, np.ndarray]:
        """A BYTES array of UTF-8 strings [N] -> {input_ids, attention_mask}: int64 [N, L]."""
        if texts.dtype != object:
            raise InvalidInput(
                f"input {self.name!r}: expected text (BYTES, UTF-8 strings), got {texts.dtype} "
                "numbers"
            )
        strings = []
        for index, value in enumerate(texts.reshape(-1)):
            try:
                strings.append(value.decode())
            except UnicodeDecodeError:
                raise InvalidInput(f"input {self.name!r} element {index}: not UTF-8 text") from None
        if not strings:
            raise InvalidInput(f"input {self.name!r}: no text given")
        # One call for the batch: the library tokenizes it in parallel, without the GIL.
        encodings = self.tokenizer.encode_batch(strings)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        out = {self.input_ids: ids}
        if self.attention_mask:
            out[self.attention_mask] = np.array([e.attention_mask for e in encodings], np.int64)
        return out
