"""zoo's built-in component plugins, one module per family (installed as the package ``zoo_plugins``).

They are ordinary plugins: loaded by module name through the same path as third-party plugins, and
they import only zoo's public interfaces (``zoo.hookimpl``, ``zoo.specs``, ``zoo.interfaces``,
``zoo.weights``, ``zoo.errors``), never the builder.
"""
