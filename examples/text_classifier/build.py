"""Build the text classifier example: a small transformer exported with torch.export, and a
tokenizer built here from a few sentences, so the predictor takes plain sentences.

    python examples/text_classifier/build.py [OUTPUT_DIR]

(default OUTPUT_DIR: examples/text_classifier/model)

Writes tokenizer.json (a word-level Hugging Face tokenizer, trained on the corpus below:
nothing is downloaded), model.pt2 (random weights, seed 0), model.json (the `text` input,
feeding `input_ids` and `attention_mask`) and labels.txt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

LABELS = ["negative", "positive"]
MAX_LENGTH = 32
CORPUS = [
    "the service was quick and the answers were right",
    "a slow model that gave the wrong answer",
    "great latency and no errors at all",
    "the canary failed and was rolled back",
    "requests were served fast and well",
    "it crashed twice and lost the data",
]


class TextClassifier(torch.nn.Module):
    """Token embeddings, one transformer encoder layer, a masked mean, a linear head."""

    def __init__(self, vocab: int, width: int = 32, classes: int = len(LABELS)) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.position = torch.nn.Parameter(torch.randn(MAX_LENGTH, width) * 0.02)
        self.encoder = torch.nn.TransformerEncoderLayer(
            width, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True
        )
        self.head = torch.nn.Linear(width, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.embed(input_ids) + self.position[:length]
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


def build_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"])
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(MAX_LENGTH)
    return tokenizer


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save(str(out / "tokenizer.json"))
    torch.manual_seed(0)
    model = TextClassifier(tokenizer.get_vocab_size()).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    length = torch.export.Dim("length", min=1, max=MAX_LENGTH)
    example = tokenizer.encode_batch(CORPUS[:2])
    ids = torch.tensor([e.ids for e in example])
    mask = torch.tensor([e.attention_mask for e in example])
    dims = {0: batch, 1: length}
    with torch.no_grad():
        program = torch.export.export(
            model, (ids, mask), dynamic_shapes={"input_ids": dims, "attention_mask": dims}
        )
    torch.export.save(program, str(out / "model.pt2"))
    signature = {
        "inputs": [
            {"name": "text", "text": {"tokenizer": "tokenizer.json", "max_length": MAX_LENGTH}}
        ],
        "outputs": [{"name": "logits"}],
    }
    (out / "model.json").write_text(json.dumps(signature, indent=2) + "\n")
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "model"
    print(f"wrote {build(target)}")
