"""Qwen-1's ``qwen.tiktoken`` vocabulary as a transformers fast tokenizer (no remote code, no tiktoken).

Qwen-1 ships a tiktoken BPE file (one ``base64(token) rank`` per line) and a Python tokenizer class that
needs ``trust_remote_code``. This module converts the file with transformers' own ``TikTokenConverter``
(byte-level BPE, merges recovered from the ranks) using Qwen-1's split pattern (single digits, unlike
GPT-4's ``\\p{N}{1,3}``), NFC normalisation, and Qwen-1's 208 special tokens in their fixed order right after
the BPE ranks: ``<|endoftext|>`` (151643 in the published vocabulary), ``<|im_start|>``, ``<|im_end|>``,
``<|extra_0|>`` ... ``<|extra_204|>``. The chat template is Qwen-1's ChatML (its ``make_context``), with
"You are a helpful assistant." as the default system message.

The file is read here rather than through ``tiktoken.load``, which is not installed by default and keeps a
copy of every local file in a temporary cache keyed by its *path* (an edited file at the same path would be
read stale). The conversion (seconds for the full vocabulary) is cached per file path, size and mtime; each
call returns a fresh tokenizer object, because callers add tokens to it.

Private module: imports transformers and tokenizers.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError

__all__ = [
    "CHATML_TEMPLATE",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "SPECIAL_TOKENS",
    "TIKTOKEN_FILE",
    "load_qwen1_tokenizer",
]

TIKTOKEN_FILE = "qwen.tiktoken"
PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, *(f"<|extra_{i}|>" for i in range(205)))
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """``{token bytes: rank}`` of a tiktoken BPE file; ranks must be exactly ``0 .. n-1``."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise CheckpointError(f"{str(path)!r}: cannot read the tiktoken vocabulary: {error}") from error
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error) as error:
            raise CheckpointError(
                f"{str(path)!r} line {number}: expected 'BASE64_TOKEN RANK', got {line[:60]!r}"
            ) from error
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise CheckpointError(
            f"{str(path)!r}: the ranks are not 0..{len(ranks) - 1} without gaps or repeats (a tiktoken BPE file)"
        )
    return ranks


_CONVERTED: dict[tuple[int, int, int, int], str] = {}


def _cached_json(file: Path) -> str:
    """:func:`_converted_json` of ``file``, cached by the file's identity (device, inode, size, mtime), not its
    path: a checkpoint is read through a new confined staging on every build (``zoo.sdk.foreign``)."""
    info = file.stat()
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _CONVERTED:
        while len(_CONVERTED) >= 4:
            _CONVERTED.pop(next(iter(_CONVERTED)))
        _CONVERTED[key] = _converted_json(str(file))
    return _CONVERTED[key]


def _converted_json(path: str) -> str:
    """The converted ``tokenizers.Tokenizer`` of the tiktoken file ``path``, as JSON."""
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return read_tiktoken_ranks(Path(tiktoken_url))

    converter = _Converter(vocab_file=path, pattern=PATTERN, extra_special_tokens=list(SPECIAL_TOKENS))
    tokenizer = converter.converted()
    tokenizer.normalizer = normalizers.NFC()  # Qwen-1 normalises every text to NFC before encoding
    first = tokenizer.token_to_id(ENDOFTEXT)
    size_bpe = tokenizer.get_vocab_size(with_added_tokens=False)
    if first != size_bpe or tokenizer.token_to_id(SPECIAL_TOKENS[-1]) != size_bpe + len(SPECIAL_TOKENS) - 1:
        raise CheckpointError(
            f"{path!r}: the vocabulary already holds Qwen-1's special tokens; they must follow the BPE ranks"
        )
    return str(tokenizer.to_str())


def load_qwen1_tokenizer(directory: Path) -> Any:
    """A fast tokenizer for the ``qwen.tiktoken`` in ``directory`` (a ``PreTrainedTokenizerFast``).

    Raises:
        CheckpointError: no ``qwen.tiktoken`` there, or the file is not a tiktoken BPE vocabulary.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    file = directory / TIKTOKEN_FILE
    if not file.is_file():
        raise CheckpointError(f"{str(directory)!r} has no {TIKTOKEN_FILE} (the Qwen-1 vocabulary)")
    backend = Tokenizer.from_str(_cached_json(file))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHATML_TEMPLATE,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    return tokenizer
