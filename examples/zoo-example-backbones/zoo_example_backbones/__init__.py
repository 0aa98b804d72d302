"""Example zoo plugin: a ConvNeXt vision tower and a Gemma language model, registered without importing torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.sdk import (
    LLAMA_LORA_TARGETS,
    TINY_EOS_ID,
    TINY_PAD_ID,
    TINY_VOCAB_SIZE,
    Family,
    VisionTowerConfig,
    VisionTowerSpec,
    hookimpl,
    lm_spec,
)

if TYPE_CHECKING:  # zoo.sdk.VisionTower imports torch when looked up: annotations only, here
    from zoo.sdk import VisionTower

# An LM: a transformers config class and a preset; zoo.sdk builds it (random init or model.lm.checkpoint,
# meta-aware, arch keys checked against GemmaConfig with a did-you-mean). A "tiny-*" name gets zoo's
# shipped tiny tokenizer; room is left in the vocabulary for added tokens such as <image>.
GEMMA = Family("GemmaConfig", ("gemma",), LLAMA_LORA_TARGETS, "GemmaDecoderLayer")
TINY_GEMMA = {"vocab_size": TINY_VOCAB_SIZE + 64, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
              "bos_token_id": TINY_PAD_ID, "eos_token_id": TINY_EOS_ID, "pad_token_id": TINY_PAD_ID}  # fmt: skip

# A tower whose stages differ in width: select_layer picks a stage, which sets the feature width and stride.
TINY_CONVNEXT = {"num_channels": 3, "patch_size": 4, "num_stages": 4, "hidden_sizes": [16, 24, 32, 48],
                 "depths": [1, 1, 1, 1], "image_size": 64}  # fmt: skip


def _convnext(config: VisionTowerConfig) -> VisionTower:
    from .convnext import ConvNextTower  # torch and transformers are imported here, on the first build

    return ConvNextTower.build(config)


@hookimpl
def zoo_register_language_models(register):
    register(lm_spec("tiny-gemma", GEMMA, TINY_GEMMA, "example plugin: tiny random Gemma"))


@hookimpl
def zoo_register_vision_towers(register):
    register(VisionTowerSpec(name="tiny-convnext", factory=_convnext, defaults={"arch": TINY_CONVNEXT},
                             description="example plugin: tiny random ConvNeXt", source="transformers"))  # fmt: skip
