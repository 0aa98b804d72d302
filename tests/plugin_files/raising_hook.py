"""A plugin whose registration hook raises."""

import zoo


@zoo.hookimpl
def zoo_register_projectors(register):
    raise RuntimeError("boom in hook")
