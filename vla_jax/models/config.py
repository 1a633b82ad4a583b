"""Model configs: small helper functions that return `ml_collections.ConfigDict`s.

Every size and switch of the model lives here, named for what it means. An experiment's
`get_config()` composes these (`model_config(size="small", head="diffusion")`) and overrides single
keys; there is no inheritance tree. The config also fixes the model's input spec (cameras, image
size, window, proprio and action dims), so a saved config is enough to rebuild, serve or export it.

Main keys (`config.<key>`):
  size                      "tiny" (unit tests) | "small" (CPU default) | "base" (GPU).
  cameras                   camera names; the batch holds `observation/image_<name>`.
  image_size_px             square image side the tokenizer expects.
  window_size               observation history length T.
  proprio_dim, use_proprio  proprio vector length D and whether to tokenize it at all.
  proprio_modalities        () = one token from the whole vector; or ((name, start, stop), ...) to
                            split named slices (e.g. pose vs tactile) into separate modalities.
  action_horizon, action_dim, action_clip   chunk [H, A]; sampled actions clipped to ±action_clip.
  num_readout_tokens        readout tokens appended after the observations.
  image.*                   conv stem (features, kernel, strides; () = all 2) + patch size, optional language FiLM
                            (`film_context_depth` blocks contextualise the instruction before pooling),
                            CoordConv channels, and `num_learned_tokens` > 0 to replace the patches
                            by K TokenLearner tokens (weighted features + spatial-softmax x, y).
  language.*                encoder "learned" (today's baseline) | "minilm" (frozen pretrained
                            all-MiniLM-L6-v2 features, computed outside the policy and cached; see
                            vla_jax/language/). mode "tokens": learned — byte ids with learned
                            embeddings (`byte_conv_kernel` > 0 adds a character n-gram conv);
                            minilm — the per-token features [B, L, F] + mask, projected, and with
                            `num_task_tokens` K > 0 resampled to K tokens by learned queries.
                            mode "embedding": one sentence embedding [B, E] (the dataset's own, or
                            MiniLM's with encoder "minilm") → `embedding_num_tokens` tokens. "none".
  transformer.*             width, depth, num_heads, mlp_dim, dropout_rate.
  head.kind                 "diffusion" | "flow" | "l1" | "mse" | "discrete" — one key to compare heads.
  head.denoiser.*, head.diffusion.*, head.flow.*, head.regression.*, head.discrete.*
  embodiment.*              names (multi-embodiment models: `task/embodiment` int32 [B] indexes
                            them), token (a learned embodiment token), separate_heads (one action
                            head per embodiment); names=() is a single-robot model.
  referent_loss.*           auxiliary localisation loss (weight 0 = off): the first K learned-token
                            attention maps of `camera` are trained towards Gaussian heatmaps at the
                            batch's `aux/referent_xy` (simulator labels of the objects the
                            instruction names); needs `image.num_learned_tokens` >= K.
  state_loss.*              auxiliary state regression (weight 0 = off): a small MLP on the readout
                            tokens predicts the batch's `aux/state_target` (privileged simulator
                            state, e.g. the object's and goal's world xyz; data.state_targets > 0).
"""

from __future__ import annotations

import ml_collections

SIZES = ("tiny", "small", "base")
HEAD_KINDS = ("diffusion", "flow", "l1", "mse", "discrete")
LANGUAGE_MODES = ("tokens", "embedding", "none")
LANGUAGE_ENCODERS = ("learned", "minilm")


def transformer_config(size: str) -> ml_collections.ConfigDict:
  """Backbone transformer sizes. `small` is ~2 M params: it must train on 2 CPU cores."""
  sizes = {
      "tiny": dict(width=32, depth=2, num_heads=2, mlp_dim=64),
      "small": dict(width=192, depth=4, num_heads=3, mlp_dim=768),
      "base": dict(width=512, depth=8, num_heads=8, mlp_dim=2048),
  }
  if size not in sizes:
    raise ValueError(f"model size {size!r} unknown; expected one of {SIZES}")
  return ml_collections.ConfigDict(dict(dropout_rate=0.0, **sizes[size]))


def image_config(size: str) -> ml_collections.ConfigDict:
  """Conv stem (each conv halves the resolution unless `stem_strides` says 1) followed by patchify.

  On 64×64 images, `small` gives stride 2 × patch 4 = 8 px per token → 64 tokens per frame.
  """
  sizes = {
      "tiny": dict(stem_features=(8,), patch_size=4),
      "small": dict(stem_features=(32,), patch_size=4),
      "base": dict(stem_features=(32, 64), patch_size=2),
  }
  # film_context_depth: self-attention blocks over the task tokens before they are pooled into
  # the FiLM condition (0 = a bag-of-words mean that loses which object plays which role).
  # stem_activation: "gelu" or "relu" after every stem conv and in the learned tokens' per-pixel
  # hidden layer (relu: a faster step on CPU, but worse held-out success; tokenizers.STEM_ACTIVATIONS).
  # film_from_layer: with film, the index of the first FiLMed stem conv (0 = all; 1 leaves the
  # colour-level first conv unconditioned; measured on the quickstart, seed 0: held-out combos
  # 72 % vs 83 %, benchmarks/results/minilm_ablation.md).
  # attribute_maps: learned token 0 attends with the sum of a colour map and a shape map (an AND
  # that composes colour-shape pairs never seen together; tokenizers.ImageTokenizer._learned_tokens).
  return ml_collections.ConfigDict(dict(stem_kernel_size=3, stem_strides=(), film=False, stem_activation="gelu",
                                        film_from_layer=0, attribute_maps=False,
                                        film_context_depth=0, coord_channels=False,
                                        num_learned_tokens=0, **sizes[size]))


def language_config(size: str, mode: str = "tokens", encoder: str = "learned") -> ml_collections.ConfigDict:
  """Instruction encoding. Byte ids are grouped `bytes_per_token` at a time so a 64-byte
  instruction costs 16 transformer tokens, not 64. `minilm_language` switches to the frozen
  pretrained encoder."""
  if mode not in LANGUAGE_MODES:
    raise ValueError(f"language mode {mode!r} unknown; expected one of {LANGUAGE_MODES}")
  if encoder not in LANGUAGE_ENCODERS:
    raise ValueError(f"language encoder {encoder!r} unknown; expected one of {LANGUAGE_ENCODERS}")
  return ml_collections.ConfigDict(
      dict(
          encoder=encoder,
          mode=mode,
          feature_dim=384,  # F of `task/language_features` (encoder "minilm").
          num_task_tokens=4,  # K learned queries that resample the encoder's tokens (0 = keep all L).
          feature_position_embedding=False,  # Add learned positions to the encoder's states.
          token_dropout=0.0,  # Training: hide each encoder token (not [CLS]) with this probability.
          sentence_token=False,  # MiniLM: add one task token from the pooled sentence embedding.
          max_len=64,  # L of `task/language_tokens` (bytes) or of `task/language_features` (MiniLM).
          vocab_size=257,  # vla_jax.data.language.VOCAB_SIZE.
          byte_embedding_dim={"tiny": 16, "small": 64, "base": 128}[size],
          bytes_per_token=4,
          byte_conv_kernel=0,  # > 0: a character n-gram conv over the bytes before grouping.
          embedding_dim=512,  # E of `task/language_embedding` (e.g. Bridge's 512-d embedding).
          embedding_num_tokens={"tiny": 1, "small": 2, "base": 4}[size],
      )
  )


def head_config(size: str, kind: str = "diffusion") -> ml_collections.ConfigDict:
  """All heads' settings are always present; `kind` picks which one is built."""
  if kind not in HEAD_KINDS:
    raise ValueError(f"head kind {kind!r} unknown; expected one of {HEAD_KINDS}")
  hidden = {"tiny": 32, "small": 256, "base": 512}[size]
  return ml_collections.ConfigDict(
      dict(
          kind=kind,
          # The small MLP-ResNet that iterates (diffusion and flow heads).
          denoiser=dict(hidden_dim=hidden, num_blocks={"tiny": 1, "small": 3, "base": 3}[size],
                        time_features=32),
          diffusion=dict(
              num_train_steps=100,  # K discrete noise levels of the cosine schedule.
              # Cap on each level's β: keeps the first DDIM step well conditioned, so exported
              # graphs match JAX (see heads/diffusion.cosine_alphas_cumprod).
              max_beta=0.5,
              num_sample_steps=10,  # DDIM steps at inference.
              eta=0.0,  # DDIM η: 0 = deterministic given the initial noise.
              num_noise_samples=4,  # noise draws per example per train step (the head is cheap).
          ),
          flow=dict(num_integration_steps=10, num_noise_samples=4),
          # Training-time action conditioning for real-time chunking (heads/realtime.py, mode
          # "conditioned"): a plain_fraction of the training rows is given nothing; every other row
          # draws d ~ U{1 … max_delay} and its first d actions are given clean (and flagged) to the
          # denoiser with no loss, so the head learns to continue a prefix. max_delay 0 = off (the
          # denoiser has no prefix input). detach_backbone: rows given a prefix train the head only.
          prefix_conditioning=dict(max_delay=0, plain_fraction=0.5, detach_backbone=False),
          # β of real-time chunking's guided sampling (heads/realtime.py): the clip on the guidance
          # weight. Inference only (exports bake it in; `benchmarks/realtime_chunking.py
          # --max_guidance` overrides it); configs saved before it existed sample with 5.
          rtc_max_guidance=5.0,
          regression=dict(hidden_dim=hidden),
          discrete=dict(num_bins=256, hidden_dim=hidden),
      )
  )


def referent_loss_config(weight: float = 0.0) -> ml_collections.ConfigDict:
  """Auxiliary loss that tells the image tokenizer *where* the instruction's objects are.

  Why: learning to localise "the red square" among same-colour and same-shape distractors from the
  action loss alone is slow (the action only says which way to move); a per-pixel target is a
  dense signal. Only datasets that carry labels (the built-in simulator's) contribute.
  """
  return ml_collections.ConfigDict(dict(
      weight=weight,  # 0 = off. Multiplies the mean cross-entropy over valid referents.
      # Whose learned-token maps are supervised. With several, aux/referent_xy's rows are split
      # evenly among them in this order (data with labels for several views stores them camera-major).
      cameras=("primary",),
      sigma=0.03,  # Std of the target heatmap, in image-width units ([0, 1] coordinates).
      # > 0: also trains image.attribute_maps' colour and shape maps towards every object sharing
      # the target's colour / shape (batch aux/attribute_xy; data.attribute_objects > 0).
      attribute_weight=0.0,
  ))


def state_loss_config(weight: float = 0.0, num_targets: int = 0) -> ml_collections.ConfigDict:
  """Auxiliary loss that asks the readouts to say where things are in the world, not the image.

  Why: learned image tokens trained by the referent loss find the object and goal in the image
  (to a fraction of a pixel), but acting on them needs their position relative to the gripper in
  the world, which the action loss alone teaches from few demonstrations. Regressing the simulator's
  object / goal coordinates from the readouts is a dense signal for that mapping. Labels are used
  in training only; the policy's inputs are unchanged.
  """
  return ml_collections.ConfigDict(dict(
      weight=weight,  # 0 = off. Multiplies the mean squared error over valid samples.
      num_targets=num_targets,  # N: must equal data.state_targets (the label's size).
      hidden_dim=256,  # The MLP's hidden width (readouts mean-pooled → hidden → N).
  ))


def model_config(size: str = "small", head: str = "diffusion",
                 language: str = "tokens") -> ml_collections.ConfigDict:
  """The full model config; defaults match the built-in 64×64 single-camera tabletop dataset."""
  if size not in SIZES:
    raise ValueError(f"model size {size!r} unknown; expected one of {SIZES}")
  return ml_collections.ConfigDict(
      dict(
          size=size,
          cameras=("primary",),
          image_size_px=64,
          window_size=2,
          proprio_dim=5,
          use_proprio=True,
          proprio_modalities=(),
          action_horizon=4,
          action_dim=3,
          action_clip=1.0,
          num_readout_tokens=1,
          image=image_config(size),
          language=language_config(size, language),
          transformer=transformer_config(size),
          head=head_config(size, head),
          referent_loss=referent_loss_config(),
          state_loss=state_loss_config(),
          embodiment=embodiment_config(),
      )
  )


def embodiment_config(names: tuple[str, ...] = (), token: bool = True,
                      separate_heads: bool = False) -> ml_collections.ConfigDict:
  """Multi-embodiment conditioning. names: the embodiments (dataset names) the model serves, in
  `task/embodiment` index order; () = a single-embodiment model (no such input). token: a learned
  embodiment token among the task tokens; separate_heads: one action head per embodiment."""
  return ml_collections.ConfigDict(dict(names=tuple(names), token=token, separate_heads=separate_heads))


def embodiment_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The embodiments a multi-embodiment model knows (`task/embodiment` indexes them); () = one.
  Configs saved before the key existed are single-embodiment."""
  emb = config.get("embodiment")
  return tuple(emb.names) if emb is not None and emb.get("names") else ()


def minilm_language(language: ml_collections.ConfigDict, mode: str = "tokens") -> None:
  """Switches a model's `language` config to the frozen MiniLM encoder (in place).

  The matching input pipeline sets `data.language = "minilm"` (and `data.max_language_tokens`,
  which the model's `language.max_len` follows).
  """
  if mode not in ("tokens", "embedding"):
    raise ValueError(f"MiniLM language mode {mode!r}: expected 'tokens' (per-token features) or "
                     "'embedding' (the sentence embedding)")
  language.update(encoder="minilm", mode=mode, embedding_dim=language.feature_dim)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`config_flags` entry point: `--config vla_jax/models/config.py:small,diffusion`."""
  parts = (arg or "small").split(",")
  return model_config(*parts)
