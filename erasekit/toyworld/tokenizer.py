"""A real CLIP BPE tokenizer for the toy world's words.

Every domain word becomes one token; every letter exists on its own (with and
without CLIP's end-of-word marker), so a misspelling splits into sub-word
pieces instead of collapsing into one unknown token, as with SD's tokenizer.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer

from erasekit.toyworld.domain import words

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 24


def train_bpe(vocabulary: list[str]) -> tuple[dict[str, int], list[str]]:
    """BPE vocab and merges under which each vocabulary word is a single token."""
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,
        min_frequency=1,
        special_tokens=[],
        initial_alphabet=list(string.ascii_lowercase),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    # Single letters as words give every "x</w>" piece; domain words weigh more so they merge first.
    corpus = list(string.ascii_lowercase) + [w for w in vocabulary for _ in range(8)]
    tokenizer.train_from_iterator(corpus, trainer)
    state = json.loads(tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    pieces = sorted(state["vocab"], key=state["vocab"].get)
    extra = list(string.digits) + [",", ".", "!", "'", "-"]
    ordered = [p for p in pieces] + [e for e in extra if e not in state["vocab"]]
    ordered += [e + "</w>" for e in extra if e + "</w>" not in state["vocab"]]
    vocab = {token: i for i, token in enumerate(ordered)}
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def save_tokenizer(directory: Path) -> CLIPTokenizer:
    """Write vocab.json, merges.txt and the tokenizer config, in SD's layout, and load them back."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = train_bpe(words())
    (directory / "vocab.json").write_text(json.dumps(vocab, indent=1))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(directory, model_max_length=MAX_LENGTH)
    tokenizer.save_pretrained(directory)
    return tokenizer
