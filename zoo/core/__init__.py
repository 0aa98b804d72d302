"""The core wing: what turns a YAML composition into a model.

The component registry and the pluggy plugin host, model configs and the hidden-size contract, the
builder and ``MultiModal`` (with any-res tiling and the anyres projector), the processor, the prompt
renderer, the build-time train policy (frozen / full / LoRA) and the records, data-config and progress
helpers the wings above share. It imports only ``zoo.sdk`` and ``zoo.errors``.
"""
