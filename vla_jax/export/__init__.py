"""Edge export: JAX policy → jax2tf (TF ops) → TF SavedModel → tf2onnx → ONNX, parity-checked.

Public API:
  export_config()                               → ConfigDict of export settings (config.py)
  bundle_from_checkpoint(dir) / random_bundle(model_config)   → PolicyBundle (serving.py)
  export_policy(bundle, out_dir, config)        → manifest dict; writes a checked export (exporter.py)
  load_manifest(out_dir), OnnxPolicy            → use an export (onnx_policy.py)
  ExportError                                   → any check that failed, with the reason
"""

from vla_jax.export.config import export_config
from vla_jax.export.convert import ExportError
from vla_jax.export.exporter import export_policy, load_manifest
from vla_jax.export.serving import PolicyBundle, bundle_from_checkpoint, random_bundle

__all__ = ["ExportError", "PolicyBundle", "bundle_from_checkpoint", "export_config", "export_policy",
           "load_manifest", "random_bundle"]
