"""Data shipped with the package: the default image of the commands that take one."""

from importlib import resources

DEFAULT_IMAGE = resources.files("coolchic_pl") / "data" / "kodim15_192x128.png"
