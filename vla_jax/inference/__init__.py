"""Inference: the one way to turn a checkpoint or an export into a runnable policy.

Between training and everything that runs a trained policy (evaluation, export, the server, the
trial runner, notebooks):

  bundle       PolicyBundle and `load_checkpoint`: config + params + one dataset's statistics,
               chosen by one rule (`choose_statistics`).
  policy_fn    the deployed policy as one pure function (raw observations + noise → env-unit
               actions): export converts it, `JaxPolicy` jits it — the same function.
  window       ObservationWindow: each robot's last T frames, padded as the input pipeline pads.
  jax_policy   JaxPolicy: the closed-loop policy over `policy_fn` (evaluation, JAX server backend).
  onnx_runtime OnnxPolicy and the ONNX Runtime session set-up over an export directory — numpy,
               onnxruntime and the instruction tokenizer only: importing and running it loads
               neither JAX nor TensorFlow (tested).
  artifacts    export directory names and `read_manifest` (JAX-free).
  execution    chunk execution under inference delay — sync, naive_async, ensemble, hard, rtc —
               for N robots in numpy (JAX-free): the simulator rollout uses it (the robot client
               `serving/chunking.py` does not yet).
  testing      synthetic statistics and random bundles for tests and benchmarks.

Import the submodules directly: this package's import loads nothing heavy.
"""
