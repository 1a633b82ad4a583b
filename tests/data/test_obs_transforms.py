"""Decoding, resizing and batch augmentation."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vla_jax.data import obs_transforms


def _textured(batch: int, frames: int) -> np.ndarray:
  rng = np.random.default_rng(0)
  one = rng.integers(0, 255, size=(batch, 1, 32, 32, 3), dtype=np.uint8)
  return np.repeat(one, frames, axis=1)


def test_decode_is_lossless_for_png_at_the_stored_size():
  image = _textured(1, 1)[0, 0]
  frames = tf.stack([tf.io.encode_png(image)] * 3)
  out = obs_transforms.decode_frames(frames, (32, 32), (32, 32)).numpy()
  assert out.shape == (3, 32, 32, 3)
  np.testing.assert_array_equal(out[1], image)


def test_decode_resizes_to_the_output_size():
  frames = tf.stack([tf.io.encode_png(np.zeros((48, 40, 3), np.uint8))] * 2)
  assert obs_transforms.decode_frames(frames, (64, 64), (48, 40)).shape == (2, 64, 64, 3)


def test_augmentation_is_seeded_shared_across_the_window_and_keeps_dtype():
  images = tf.constant(_textured(4, 3))
  config = obs_transforms.augmentation_config()
  a = obs_transforms.augment_images(images, tf.constant([1, 2], tf.int32), config).numpy()
  b = obs_transforms.augment_images(images, tf.constant([1, 2], tf.int32), config).numpy()
  c = obs_transforms.augment_images(images, tf.constant([1, 3], tf.int32), config).numpy()
  assert a.dtype == np.uint8 and a.shape == images.shape
  np.testing.assert_array_equal(a, b)
  assert (a != c).any() and (a != images.numpy()).any()
  np.testing.assert_array_equal(a[:, 0], a[:, 2])  # Same crop + jitter on every frame of a sample.
