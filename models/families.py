"""Imports every family module so that its variants register themselves."""

from . import cvt, deit, digits, hvt, resnas  # noqa: F401
