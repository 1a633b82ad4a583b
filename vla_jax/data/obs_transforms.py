"""Per-frame observation transforms: decode + resize (once per frame) and batch augmentation.

Why this split: decoding and resizing happen on whole trajectories *before* windowing, so each
stored frame is decoded exactly once per pass (or once in total with the in-memory cache), not once
per window copy. Augmentation (random crop/shift + colour jitter, training only) happens on whole
*batches* after batching, vectorised over B x T images with `tf.image.crop_and_resize`, which is far
cheaper than a per-sample map. Augmentation randomness is stateless, keyed by (seed, batch index),
so it is reproducible and independent of thread scheduling and of resumption.

Within one sample the same crop and colour change is applied to every frame of the observation
window (and to the goal image), so motion between frames is not confused with augmentation; each
camera gets its own draw.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import tensorflow as tf


def augmentation_config(enabled: bool = True) -> ml_collections.ConfigDict:
  """Default training augmentation (Octo-like magnitudes for small images)."""
  c = ml_collections.ConfigDict()
  c.enabled = enabled
  c.crop_scale = (0.8, 1.0)   # Fraction of the image area kept by the random crop.
  c.crop_ratio = (0.9, 1.1)   # Aspect-ratio range of the crop (w / h).
  c.brightness = 0.1          # Max additive change, as a fraction of 255.
  c.contrast = (0.9, 1.1)     # Multiplicative range around each image's mean.
  c.saturation = (0.9, 1.1)   # Multiplicative range around each pixel's grey value.
  return c


def decode_frames(frames: tf.Tensor, size_px: tuple[int, int], stored_size_px: tuple[int, int] | None) -> tf.Tensor:
  """tf.string [T] (JPEG/PNG) or uint8 [T, h, w, 3] -> uint8 [T, H, W, 3] at `size_px`.

  Resizing is skipped when the stored size is known and already equal (the common case), so a
  frame is decoded and never touched by float arithmetic.
  """
  height, width = size_px
  needs_resize = stored_size_px is None or tuple(stored_size_px) != (height, width)

  def one(frame: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(frame, channels=3, expand_animations=False) if frame.dtype == tf.string else frame
    if needs_resize:
      image = tf.image.resize(image, [height, width], method="bilinear", antialias=True)
      image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return tf.ensure_shape(image, [height, width, 3])

  if frames.dtype == tf.uint8 and not needs_resize:
    return tf.ensure_shape(frames, [None, height, width, 3])
  if frames.dtype == tf.uint8:
    images = tf.image.resize(frames, [height, width], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)
  return tf.map_fn(one, frames, fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8),
                   parallel_iterations=4)


def _sample_boxes(seed: tf.Tensor, batch: tf.Tensor, scale: tuple[float, float], ratio: tuple[float, float]) -> tf.Tensor:
  """float [B, 4] normalised crop boxes (y0, x0, y1, x1) of random area and aspect ratio."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  area = tf.random.stateless_uniform([batch], seeds[0], scale[0], scale[1])
  log_ratio = tf.random.stateless_uniform([batch], seeds[1], tf.math.log(ratio[0]), tf.math.log(ratio[1]))
  aspect = tf.exp(log_ratio)
  h = tf.minimum(tf.sqrt(area / aspect), 1.0)
  w = tf.minimum(tf.sqrt(area * aspect), 1.0)
  y0 = tf.random.stateless_uniform([batch], seeds[2]) * (1.0 - h)
  x0 = tf.random.stateless_uniform([batch], seeds[3]) * (1.0 - w)
  return tf.stack([y0, x0, y0 + h, x0 + w], axis=-1)


def augment_images(images: tf.Tensor, seed: tf.Tensor, config: ml_collections.ConfigDict) -> tf.Tensor:
  """uint8 [B, N, H, W, 3] -> uint8 [B, N, H, W, 3]; one crop + jitter draw per b, shared over N.

  Args:
    images: a batch of B samples, each with N frames (observation window and optionally the goal).
    seed: int32 [2] stateless seed for this batch and camera.
    config: `augmentation_config()`.
  """
  dynamic = tf.shape(images)  # Static sizes where known: keeps the graph fully shaped (and quiet).
  batch, frames, height, width = (images.shape[i] if images.shape[i] is not None else dynamic[i] for i in range(4))
  seeds = tf.random.experimental.stateless_split(seed, 4)
  flat = tf.reshape(tf.cast(images, tf.float32), [batch * frames, height, width, 3])
  boxes = _sample_boxes(seeds[0], batch, tuple(config.crop_scale), tuple(config.crop_ratio))
  box_index = tf.range(batch * frames)
  flat = tf.image.crop_and_resize(flat, tf.repeat(boxes, frames, axis=0), box_index, [height, width])
  x = tf.reshape(flat, [batch, frames, height, width, 3])

  def per_sample(s, low, high):
    return tf.reshape(tf.random.stateless_uniform([batch], s, low, high), [batch, 1, 1, 1, 1])

  if config.brightness:
    x = x + 255.0 * per_sample(seeds[1], -config.brightness, config.brightness)
  if tuple(config.contrast) != (1.0, 1.0):
    mean = tf.reduce_mean(x, axis=[2, 3, 4], keepdims=True)
    x = (x - mean) * per_sample(seeds[2], *config.contrast) + mean
  if tuple(config.saturation) != (1.0, 1.0):
    grey = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    x = (x - grey) * per_sample(seeds[3], *config.saturation) + grey
  return tf.ensure_shape(tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8), images.shape)


def augment_batch(batch: dict[str, Any], batch_index: tf.Tensor, seed: int,
                  config: ml_collections.ConfigDict, goal_camera: str | None = None) -> dict[str, Any]:
  """Augments every `observation/image_*` of a batch; `task/image_goal` shares `goal_camera`'s draw."""
  obs = dict(batch["observation"])
  task = dict(batch["task"])
  base = tf.stack([tf.constant(seed, tf.int64), tf.cast(batch_index, tf.int64)])
  base = tf.cast(base % (2**31 - 1), tf.int32)
  names = sorted(k for k in obs if k.startswith("image_"))
  for i, name in enumerate(names):
    cam_seed = tf.random.experimental.stateless_fold_in(base, i)
    images = obs[name]  # [B, T, H, W, 3]
    goal_key = "image_goal" if name == f"image_{goal_camera}" and "image_goal" in task else None
    if goal_key:
      images = tf.concat([images, task[goal_key][:, None]], axis=1)
    images = augment_images(images, cam_seed, config)
    if goal_key:
      obs[name], task[goal_key] = images[:, :-1], images[:, -1]
    else:
      obs[name] = images
  return {**batch, "observation": obs, "task": task}
