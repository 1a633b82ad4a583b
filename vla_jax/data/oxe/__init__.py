"""Open X-Embodiment datasets by name: `spec.oxe_spec("fractal20220817_data", "/data/oxe")`.

Why: each OXE dataset names its cameras, proprio, action fields and instruction differently and
uses its own gripper convention; getting one of those wrong trains on silently corrupted labels.
This package records, per dataset, its published feature structure and how to map it onto this
project's layout, so a user names the dataset and gets correct batches.

  registry.py     one entry per dataset: published structure (with its source), cameras by role,
                  proprio parts, 6 end-effector dims, gripper field + convention, instruction location
  features.py     the structure notation, `features.json` parsing, "first mismatching key" checks
  grippers.py     gripper conventions -> absolute [0, 1], 1 = close (relative, inverted, binarised)
  transforms.py   an entry -> its standardisation function (registered in standardize.py)
  mixtures.py     named mixtures with Octo's weights -> lists of weighted specs for `pipeline_config`

Modules are imported directly (`from vla_jax.data.oxe import mixtures`); this file imports
nothing, so `spec.py` can use the registry without pulling in TensorFlow.
"""
