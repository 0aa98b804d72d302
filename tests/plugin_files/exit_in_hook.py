"""A plugin whose registration hook calls sys.exit()."""

import sys

import zoo


@zoo.hookimpl
def zoo_register_projectors(register):
    sys.exit("bye from a hook")
