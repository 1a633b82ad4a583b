"""Edge export: JAX policy → jax2tf (TF ops) → TF SavedModel → tf2onnx → ONNX, parity-checked.

Public API:
  export_config()                               → ConfigDict of export settings (config.py)
  export_policy(bundle, out_dir, config)        → manifest dict; writes a checked export (exporter.py)
  ExportError                                   → any check that failed, with the reason
The bundle comes from `vla_jax.inference.bundle.load_checkpoint`; an export is run with
`vla_jax.inference.onnx_runtime.OnnxPolicy` (JAX-free).
"""

from vla_jax.export.config import export_config
from vla_jax.export.convert import ExportError
from vla_jax.export.exporter import export_policy

__all__ = ["ExportError", "export_config", "export_policy"]
