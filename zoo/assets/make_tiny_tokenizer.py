"""Build the tiny tokenizer shipped in ``zoo/assets/tiny_tokenizer`` (used by every ``tiny-*`` LM).

A byte-level BPE with Qwen2's pre-tokenizer, trained with the ``tokenizers`` library on text this script
generates itself (seeded, so every run writes the same files), plus Qwen's special tokens
``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` and a ChatML chat template. Run from the repository root::

    python zoo/assets/make_tiny_tokenizer.py            # rewrites zoo/assets/tiny_tokenizer/

The image placeholder (``<image>``) is not part of it: the builder adds it with ``LanguageModel.add_tokens``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "VOCAB_SIZE", "build_tokenizer", "corpus", "main"]

VOCAB_SIZE = 1024  # BPE vocabulary including the 3 special tokens (ids 1021..1023)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
OUTPUT_DIR = Path(__file__).resolve().parent / "tiny_tokenizer"

# ChatML as the Qwen2 instruct models use it: a default system turn, then one block per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_WORDS = (
    "the a an of to in on at for with from by and or but not is are was were be been has have had do does "
    "this that these those it its there here what which who how why when where image picture photo scene "
    "describe show tell question answer user assistant system you your we our they their he she his her "
    "cat dog bird car bus train tree house street man woman child people table chair window sky water "
    "red green blue yellow black white small large left right top bottom front behind next near color "
    "one two three four five many some all each every number count text read write look see find model "
    "vision language token layer hidden size patch feature projector tower train loss label batch"
).split()
_PUNCT = (".", ",", "?", "!", ":", ";")
_CODE = ("def f(x):", "return x + 1", "print('hi')", "x = [1, 2, 3]", "if a == b:", '{"k": 0}', "# note")
_OTHER = ("数字", "图像", "猫", "狗", "café", "naïve", "über", "12.5%", "2024-01-31", "$3.99", "@zoo", "\t", "\n\n")


_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def corpus(num_lines: int = 8000, seed: int = 0) -> Iterator[str]:
    """Deterministic training text: sentences, made-up words, numbers, code, chat turns, some non-ASCII."""
    rng = random.Random(seed)
    coined = ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3))) for _ in range(600)]
    for i in range(num_lines):
        words = [rng.choice(_WORDS) if rng.random() < 0.7 else rng.choice(coined) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        line = " ".join(words) + rng.choice(_PUNCT)
        if i % 5 == 0:
            line += f" {rng.randint(0, 10_000)} {rng.choice(_CODE)}"
        if i % 7 == 0:
            line += " " + rng.choice(_OTHER)
        if i % 11 == 0:
            line = f"<|im_start|>user\n{line}<|im_end|>\n<|im_start|>assistant\n{line.lower()}<|im_end|>"
        yield line


def build_tokenizer():
    """Train the BPE and wrap it as a transformers ``Qwen2Tokenizer`` (eos ``<|im_end|>``, pad ``<|endoftext|>``)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus(), trainer=trainer)
    data = json.loads(backend.to_str())["model"]
    vocab = dict(data["vocab"])
    vocab.update({token: len(vocab) + i for i, token in enumerate(SPECIAL_TOKENS)})  # Qwen's order, at the end
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["merges"]],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )


def main(argv: list[str] | None = None) -> Path:
    """Write the tokenizer files to ``--out`` (default: ``zoo/assets/tiny_tokenizer``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR)
    args = parser.parse_args(argv)
    tokenizer = build_tokenizer()
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(args.out), save_jinja_files=False)
    print(f"wrote {args.out} ({len(tokenizer)} tokens)")
    return args.out


if __name__ == "__main__":
    main()
