"""The ``data:`` section of a training (or quality-bench) file, validated without any model library.

``zoo.train.data`` (the dataset and collator) re-exports :class:`DataConfig` and :func:`parse_data_config`;
they live here so that ``zoo validate`` checks a training file without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from zoo.core.config import config_from_dict
from zoo.core.prompt import TEMPLATE_DEFAULT, parse_end_token, parse_system_prompt
from zoo.core.records import ON_ERROR
from zoo.errors import ConfigError
from zoo.sdk.limits import brief
from zoo.sdk.problems import Problems, report

__all__ = ["DataConfig", "check_data_paths", "check_room_for_an_image", "parse_data_config"]


@dataclass(frozen=True)
class DataConfig:
    """The ``data:`` section of a training file (paths already resolved against the file's folder).

    Attributes:
        train: LLaVA conversation JSON (a list) or JSONL.
        eval: held-out records in the same format (optional).
        image_folder: where relative image paths resolve; ``None``: the folder of each JSON file.
        max_length: ids per sample after image expansion (longer samples are truncated).
        on_error: ``error`` stops at the first bad record; ``skip`` drops bad records and reports the count.
        group_by_modality_length: batch image and text-only samples apart, by length (LLaVA's sampler).
        num_workers: dataloader worker processes (images are opened in them).
        system_prompt: the system turn of every sample (a string; ``None``: none; absent: the tokenizer
            template's default). Recorded in the checkpoint, so eval / generate / chat render the same way.
        end_token: the token that ends every assistant turn and is supervised with its content, in place of
            the template's end-of-turn marker (``<|endoftext|>``: the VLM-learning reference; ``None``: the
            template's, ``<|im_end|>`` for ChatML). Recorded in the checkpoint; generation stops at it.
    """

    train: str
    eval: str | None = None
    image_folder: str | None = None
    max_length: int = 2048
    on_error: str = "error"
    group_by_modality_length: bool = False
    num_workers: int = 0
    system_prompt: Any = TEMPLATE_DEFAULT  # str | None | TEMPLATE_DEFAULT (zoo.core.prompt)
    end_token: str | None = None

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"on_error": ON_ERROR}

    def image_folder_for(self, data_file: str | Path) -> Path:
        """The folder that relative image paths of ``data_file`` resolve against."""
        return Path(self.image_folder) if self.image_folder is not None else Path(data_file).parent


def parse_data_config(
    data: Any, *, source: str = "<config>", base_dir: Path | None = None, problems: Problems | None = None
) -> DataConfig:
    """Validate the ``data:`` mapping; relative paths resolve against ``base_dir`` (the YAML's folder).

    ``problems``: record every problem instead of raising the first (``zoo.sdk.problems``).

    Example:
        >>> parse_data_config({"train": "train.json"}, source="run.yaml", base_dir=Path("/runs")).train
        '/runs/train.json'
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: data = {brief(data)}: expected a mapping with at least 'train'", key="data")
    if "train" not in data:
        report(problems, ConfigError(f"{source}: missing required key 'data.train'", key="data.train"))
    config = config_from_dict(DataConfig, data, "data", source, problems)
    if config.max_length < 1:
        report(problems, ConfigError(f"{source}: data.max_length = {config.max_length!r} is not valid; it must be "
                                     ">= 1", key="data.max_length"))  # fmt: skip
    if config.num_workers < 0:
        report(problems, ConfigError(f"{source}: data.num_workers = {config.num_workers!r} is not valid; it must "
                                     "be >= 0", key="data.num_workers"))  # fmt: skip
    for parse, key in ((parse_system_prompt, "system_prompt"), (parse_end_token, "end_token")):
        try:
            parse(getattr(config, key), key=f"data.{key}", source=source)
        except ConfigError as error:
            error.key = f"data.{key}"
            report(problems, error)
    for key in ("train", "eval", "image_folder"):
        value = getattr(config, key)
        if value is not None and not value.strip():
            report(problems, ConfigError(f"{source}: data.{key} = {value!r}: expected a path", key=f"data.{key}"))
    base = Path(base_dir) if base_dir is not None else None

    def resolve(value: str | None) -> str | None:
        if value is None or base is None or Path(value).is_absolute():
            return value
        return str(base / value)

    return DataConfig(
        **{**config.__dict__, **{k: resolve(getattr(config, k)) for k in ("train", "eval", "image_folder")}}
    )


def check_data_paths(config: DataConfig, *, source: str = "<config>", problems: Problems | None = None) -> None:
    """``data.train`` and ``data.eval`` must be files, ``data.image_folder`` a directory (paths resolved)."""
    for key in ("train", "eval", "image_folder"):
        value = getattr(config, key)
        if value is None or not value.strip():
            continue
        path = Path(value)
        want_dir = key == "image_folder"
        try:
            ok = path.is_dir() if want_dir else path.is_file()
            exists = ok or path.exists()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            ok = exists = False
        if not ok:
            what = "directory" if want_dir else "file"
            state = f"is not a {what}" if exists else "does not exist"
            shown = repr(value[:300])  # the resolved path, bounded
            report(problems, ConfigError(f"{source}: data.{key} = {shown} {state}; expected a {what}",
                                         key=f"data.{key}"))  # fmt: skip


def check_room_for_an_image(max_length: int, image_tokens: int | Mapping[str, int]) -> None:
    """A ``max_length`` that one image can outgrow drops such images, and every answer after them, silently.

    ``image_tokens``: the positions of one image, or for any-res the positions by pinpoint
    (``{"HxW": tokens}``, :meth:`zoo.core.anyres.AnyResLayout.tokens_by_pinpoint`).
    """
    if isinstance(image_tokens, Mapping):
        shape = max(image_tokens, key=lambda k: image_tokens[k])
        most, what = image_tokens[shape], f"an image shaped like {shape} (model.vision.anyres)"
    else:
        most, what = image_tokens, "every image"
    if max_length < most:
        raise ConfigError(
            f"data.max_length = {max_length} is less than the {most} positions {what} takes: truncation would "
            f"drop such images with everything after them (their answers too); set data.max_length to at least "
            f"{most} plus the text (LLaVA-NeXT trains with 4096)",
            key="data.max_length",
        )
