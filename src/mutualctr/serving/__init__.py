"""Taking a trained run to serving: ``mutualctr export`` (see docs/export.md).

:func:`export_run` writes the model (ids -> probability, ONNX or TorchScript) and the encoder
spec (:func:`encoder_spec`, raw rows -> ids without mutualctr) into a directory.
"""

from mutualctr.serving.export import (
    CheckResult,
    ExportError,
    ExportResult,
    encoder_spec,
    export_run,
    log_squared_thresholds,
    read_manifest,
)

__all__ = ["CheckResult", "ExportError", "ExportResult", "encoder_spec", "export_run",
           "log_squared_thresholds", "read_manifest"]
