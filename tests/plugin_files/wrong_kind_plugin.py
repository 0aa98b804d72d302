"""A plugin that hands a projector spec to the vision-tower hook."""

import zoo


@zoo.hookimpl
def zoo_register_vision_towers(register):
    register(zoo.VisionTowerSpec(name="wrong-kind-ok", factory=lambda config: None))
    register(zoo.ProjectorSpec(name="oops", factory=lambda config: None))
