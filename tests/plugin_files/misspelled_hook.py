"""A plugin whose hook name is misspelled (``tower`` instead of ``towers``)."""

import zoo


@zoo.hookimpl
def zoo_register_vision_tower(register):
    pass
