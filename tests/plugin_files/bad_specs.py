"""Registers one bad spec chosen by the ZOO_TEST_BAD_SPEC environment variable."""

import os

import zoo


class NotADataclass:
    pass


def factory(config):
    return None


BAD = {
    "regex": dict(name="bad-regex:<x>", factory=factory, pattern=r"bad-regex:(?P<model_name>[)"),
    "name": dict(name=42, factory=factory),
    "space": dict(name="has space", factory=factory),
    "factory": dict(name="not-callable", factory="nope"),
    "config": dict(name="bad-config", factory=factory, config_cls=NotADataclass),
    "defaults": dict(name="bad-defaults", factory=factory, defaults={"dpeth": 3}),
    "group": dict(name="bad-group:<x>", factory=factory, pattern=r"bad-group:(?P<nope>.+)"),
    "wrong-type": dict(name="returns-a-string", factory=lambda config: "not a module"),
}


@zoo.hookimpl
def zoo_register_projectors(register):
    register(zoo.ProjectorSpec(**BAD[os.environ["ZOO_TEST_BAD_SPEC"]]))
