"""Small random models of the three embedding libraries, built offline.

Nothing comes from a model hub: a word-piece vocabulary is written here, a
2-layer XLM-R (or BERT) of random weights is saved beside it, and the real
library classes load that directory. Importing this module imports torch and
transformers, so callers guard it with ``pytest.importorskip``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from transformers import (
    BertTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaModel,
)

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(400)]
MAX_TOKENS = 2048


def write_vocab(directory: Path) -> Path:
    path = directory / "vocab.txt"
    path.write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
    return path


def tokenizer(directory: Path) -> BertTokenizerFast:
    tok = BertTokenizerFast(vocab_file=str(write_vocab(directory)), do_lower_case=True,
                            model_max_length=MAX_TOKENS)
    return tok


def config(vocab_size: int, hidden: int = 64, layers: int = 2) -> XLMRobertaConfig:
    # pad_token_id 0 matches [PAD] of the word-piece vocabulary; positions are
    # offset by pad_token_id + 1 in XLM-R, hence the +2.
    return XLMRobertaConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=2 if hidden < 64 else 4, intermediate_size=hidden * 2,
        max_position_embeddings=MAX_TOKENS + 2, pad_token_id=0, bos_token_id=2,
        eos_token_id=3, type_vocab_size=1)


def _save(directory: Path, model_class: Any, seed: int, hidden: int, layers: int = 2) -> Path:
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(directory)
    model_class(config(len(tok), hidden, layers)).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def save_encoder(directory: Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A random XLM-R encoder (2 layers unless told) plus its tokenizer, saved to ``directory``."""
    return _save(directory, XLMRobertaModel, seed, hidden, layers)


def save_masked_lm(directory: Path, seed: int = 0, hidden: int = 64) -> Path:
    """A random 2-layer XLM-R masked LM (for SPLADE) plus its tokenizer."""
    return _save(directory, XLMRobertaForMaskedLM, seed, hidden)


def texts(count: int, lo: int, hi: int, seed: int = 1) -> list[str]:
    """``count`` texts of ``lo`` to ``hi`` words (one word = one token), shuffled."""
    rng = random.Random(seed)
    step = (hi - lo) / max(count - 1, 1)
    out = [" ".join(rng.choice(WORDS) for _ in range(round(lo + i * step)))
           for i in range(count)]
    rng.shuffle(out)
    return out


def splade(model: torch.nn.Module, tok: BertTokenizerFast, batch: list[str]) -> torch.Tensor:
    """SPLADE sparse vectors: max over tokens of log1p(relu(logits)), padding masked."""
    enc = tok(batch, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**enc).logits
    weights = torch.log1p(torch.relu(logits)) * enc["attention_mask"].unsqueeze(-1)
    return weights.max(dim=1).values
