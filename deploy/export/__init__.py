"""The export stage: a zoo model and a target in, a verified artifact folder out.

Takes an `ExportRequest` (model, target, precision, weights, batches, passes); hands on an
`ExportResult`: the artifact folder (`<out>/<model>/<target>-<precision>/`, engine files and
`manifest.json`) that `load_artifact` opens as a runtime `Runner`.

Steps, one module each: `onnx_export` (torch.onnx dynamo export, checker, onnxslim), `graph` (the
target's passes from `targets`, or `autotune` measuring candidates, over one `onnx_cache`), the runtime
adapter's build, `verify` (parity against PyTorch fp32 with `parity`'s tolerances) and `artifacts`
(staging and atomic promotion). `stage` runs them in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..callable import callable_package

if TYPE_CHECKING:
    from .request import ExportRequest, ExportResult
    from .stage import export, load_artifact

__all__ = ["ExportRequest", "ExportResult", "export", "load_artifact"]


def __getattr__(name: str) -> Any:
    # The stage imports the zoo and the runtime adapters; `deploy.export.targets` and friends stay light.
    if name in ("export", "load_artifact"):
        from . import stage

        return getattr(stage, name)
    if name in ("ExportRequest", "ExportResult"):
        from . import request

        return getattr(request, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _export(model: Any, target: str = "onnxruntime", /, **kwargs: Any) -> Any:
    from .api import export_model

    return export_model(model, target, **kwargs)


callable_package(__name__, _export)  # `from deploy import export; export(model, "onnxruntime", ...)`
