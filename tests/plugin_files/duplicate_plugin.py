"""A plugin that registers a name the built-in projectors already own."""

import zoo


@zoo.hookimpl
def zoo_register_projectors(register):
    register(zoo.ProjectorSpec(name="linear", factory=lambda config: None, description="clash"))
