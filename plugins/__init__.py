"""zoo's built-in component plugins, one module per family (installed as the package ``zoo_plugins``).

They are ordinary plugins: loaded by module name through the same path as third-party plugins, and
they import from zoo only what any plugin may: ``zoo`` (for ``zoo.hookimpl``), the plugin SDK
``zoo.sdk`` (specs, configs, interfaces, weight and transformers helpers, ``build_component``; see
``docs/plugin-sdk.md``) and ``zoo.errors``; never the builder, the registry or the checkpoint code.
``lint-imports`` checks it (``[tool.importlinter]`` in ``pyproject.toml``).
"""
