"""A plugin whose hook function lacks the @zoo.hookimpl decorator."""


def zoo_register_projectors(register):
    pass
