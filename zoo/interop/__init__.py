"""The interop wing: other systems' formats in and out.

``llava`` (transformers' ``LlavaForConditionalGeneration``: export, import, the differences table),
``llava_next`` (LLaVA-NeXT any-res), ``vlm_learning`` / ``vlm_learning_data`` (the reference system's
checkpoints and data), ``targets`` (what an eval or demo runs on) and ``lmms_eval`` (the lmms-eval model
entry point). It imports ``zoo.sdk``, ``zoo.core`` and ``zoo.checkpoint``, never ``zoo.train``.
"""
