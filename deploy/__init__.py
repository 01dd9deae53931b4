"""Export, rewrite, build and measure vision transformers on edge runtimes."""

__version__ = "0.1.0"
