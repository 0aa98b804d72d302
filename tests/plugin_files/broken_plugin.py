"""A plugin file that fails at import time."""

import zoo_this_module_does_not_exist  # noqa: F401
