"""Export, rewrite, build and measure vision transformers on edge runtimes.

Takes a model (a zoo name, a fine-tuned checkpoint, a Hugging Face folder, a factory or an `nn.Module`) and hands
on verified engines, benchmark results and predictions. The Python API is the stages themselves, callable:
`from deploy import export, bench, predict` (see `deploy.export.api`, `deploy.bench.api`, `deploy.predict`).
The command line is `python -m deploy` (`deploy.cli`).
"""

from importlib.metadata import PackageNotFoundError, version

try:  # pyproject.toml is the one place the version is written; manifests and results record it
    __version__ = version("vit-deploy")
except PackageNotFoundError:  # a source tree that was never installed (the README installs it)
    __version__ = "0+unknown"
