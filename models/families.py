"""Imports every family module so that its variants register themselves."""

from . import deit, hvt  # noqa: F401
