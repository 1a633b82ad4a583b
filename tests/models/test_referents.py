"""The auxiliary referent loss: its value, its masking, and that it really teaches localisation."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vla_jax.data import language
from vla_jax.models import Policy, example_batch
from vla_jax.models.referents import attribute_loss, cell_centres, referent_loss


def _peaked_logits(cell_yx: tuple[int, int], size: int = 8, tokens: int = 2) -> np.ndarray:
  logits = np.zeros((1, size, size, tokens), np.float32)
  logits[0, cell_yx[0], cell_yx[1], :] = 20.0
  return logits


def test_loss_and_error_are_low_when_the_map_peaks_on_the_label_and_high_elsewhere():
  centres = cell_centres(8, 8)
  label = centres[2, 5][None, None].repeat(2, axis=1)  # [1, 2, 2]: both referents at cell (2, 5).
  valid = np.ones((1, 2), bool)
  on_loss, on = referent_loss(_peaked_logits((2, 5)), label, valid, sigma=0.03)
  off_loss, off = referent_loss(_peaked_logits((6, 1)), label, valid, sigma=0.03)
  assert float(on["referent_error"]) < 1e-3
  np.testing.assert_allclose(float(off["referent_error"]), np.linalg.norm(centres[6, 1] - centres[2, 5]),
                             rtol=1e-3)
  assert float(off_loss) > float(on_loss) + 10.0


def test_invalid_referents_add_no_loss_and_no_error():
  logits = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
  xy = np.random.default_rng(1).uniform(size=(2, 2, 2)).astype(np.float32)
  valid = np.array([[True, False], [True, False]])
  moved = xy.copy()
  moved[:, 1] = 1.0 - moved[:, 1]  # Only the invalid referents move.
  a = referent_loss(logits, xy, valid, 0.05)
  b = referent_loss(logits, moved, valid, 0.05)
  np.testing.assert_allclose(float(a[0]), float(b[0]), rtol=1e-6)
  np.testing.assert_allclose(float(a[1]["referent_error"]), float(b[1]["referent_error"]), rtol=1e-6)


def test_more_referents_than_learned_tokens_is_a_clear_error():
  with pytest.raises(ValueError, match="num_learned_tokens"):
    referent_loss(np.zeros((1, 4, 4, 1), np.float32), np.zeros((1, 2, 2), np.float32),
                  np.ones((1, 2), bool), 0.05)


def _two_peaks(cells: list[tuple[int, int]], size: int = 8) -> np.ndarray:
  """[size, size] logits with equal peaks on `cells`."""
  logits = np.zeros((size, size), np.float32)
  for y, x in cells:
    logits[y, x] = 20.0
  return logits


def test_attribute_loss_wants_the_mass_spread_over_every_listed_object():
  centres = cell_centres(8, 8)
  xy = np.zeros((1, 2, 3, 2), np.float32)
  valid = np.zeros((1, 2, 3), bool)
  xy[0, :, :2] = [centres[1, 1], centres[5, 6]]  # Target at (1, 1), a mate at (5, 6), in both rows.
  valid[0, :, :2] = True
  both = np.stack([_two_peaks([(1, 1), (5, 6)])] * 2, -1)[None]
  target_only = np.stack([_two_peaks([(1, 1)])] * 2, -1)[None]
  elsewhere = np.stack([_two_peaks([(1, 1), (7, 0)])] * 2, -1)[None]
  l_both, m_both = attribute_loss(both, xy, valid, 0.03)
  l_target, _ = attribute_loss(target_only, xy, valid, 0.03)
  l_else, m_else = attribute_loss(elsewhere, xy, valid, 0.03)
  assert float(l_both) < float(l_target) - 1.0 and float(l_both) < float(l_else) - 1.0
  assert float(m_both["attribute_miss"]) < 1e-3
  np.testing.assert_allclose(float(m_else["attribute_miss"]), 0.5, atol=1e-3)


def test_attribute_rows_and_slots_without_objects_add_no_loss():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 8, 8, 2)).astype(np.float32)
  xy = rng.uniform(size=(2, 2, 4, 2)).astype(np.float32)
  valid = np.zeros((2, 2, 4), bool)
  valid[:, 0, :2] = True  # Shape rows empty; two colour slots.
  moved = xy.copy()
  moved[:, 0, 2:] = 1.0 - moved[:, 0, 2:]
  moved[:, 1] = 1.0 - moved[:, 1]
  a = attribute_loss(logits, xy, valid, 0.05)[0]
  b = attribute_loss(logits, moved, valid, 0.05)[0]
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
  assert float(attribute_loss(logits, xy, np.zeros_like(valid), 0.05)[0]) == 0.0


def _referent_config(make_tiny_config, weight: float):
  config = make_tiny_config("l1")
  config.image.update(stem_features=(8,), film=True, coord_channels=True, num_learned_tokens=2)
  config.referent_loss.weight = weight
  config.window_size = 1
  return config


def test_policy_loss_adds_the_referent_term_only_when_enabled_and_labelled(make_tiny_config):
  batch = example_batch(_referent_config(make_tiny_config, 0.0), 2, seed=0)
  aux = {"referent_xy": np.full((2, 2, 2), 0.5, np.float32), "referent_valid": np.ones((2, 2), bool)}
  rng = jax.random.key(1)
  off = Policy(_referent_config(make_tiny_config, 0.0))
  params = off.init(jax.random.key(0), batch)
  base, _ = off.loss(params, batch, rng)
  assert float(off.loss(params, {**batch, "aux": aux}, rng)[0]) == float(base)  # Weight 0: ignored.
  on = Policy(_referent_config(make_tiny_config, 0.5))
  assert float(on.loss(params, batch, rng)[0]) == float(base)  # No labels: nothing to add.
  total, metrics = on.loss(params, {**batch, "aux": aux}, rng)
  np.testing.assert_allclose(float(total), float(base) + 0.5 * float(metrics["referent_ce"]), rtol=1e-5)
  with pytest.raises(ValueError, match="batch/aux/referent_valid"):
    on.loss(params, {**batch, "aux": {**aux, "referent_valid": np.ones((2, 3), bool)}}, rng)


def test_with_two_cameras_each_takes_its_own_label_rows_in_order(make_tiny_config):
  """Data with labels for several views stores them camera-major; the loss is the cameras' mean."""
  config = _referent_config(make_tiny_config, 1.0)
  config.cameras = ("primary", "corner")
  batch = example_batch(config, 2, seed=0)
  rng = np.random.default_rng(0)
  aux = {"referent_xy": rng.uniform(0.1, 0.9, (2, 4, 2)).astype(np.float32),
         "referent_valid": np.array([[True, True, True, False], [True, False, True, True]])}
  policy = Policy(config)
  params = policy.init(jax.random.key(0), batch)

  def metrics(cameras, rows):
    config.referent_loss.cameras = cameras
    labels = {k: v[:, rows] for k, v in aux.items()}
    return Policy(config).loss(params, {**batch, "aux": labels}, jax.random.key(1))[1]

  both = metrics(("primary", "corner"), slice(0, 4))
  primary, corner = metrics(("primary",), slice(0, 2)), metrics(("corner",), slice(2, 4))
  assert abs(float(primary["referent_ce"]) - float(corner["referent_ce"])) > 1e-3  # The test can tell them apart.
  mean_ce = (float(primary["referent_ce"]) + float(corner["referent_ce"])) / 2
  np.testing.assert_allclose(float(both["referent_ce"]), mean_ce, rtol=1e-5)
  np.testing.assert_allclose(float(both["referent_error_corner"]), float(corner["referent_error"]), rtol=1e-5)
  np.testing.assert_allclose(float(both["referent_error_primary"]), float(primary["referent_error"]), rtol=1e-5)
  with pytest.raises(ValueError, match=r"has 3 referent rows .* not a multiple of the 2 cameras"):
    metrics(("primary", "corner"), slice(0, 3))
  with pytest.raises(ValueError, match=r"referent_loss.cameras=\('wrist',\): \['wrist'\] not among"):
    metrics(("wrist",), slice(0, 2))


def test_attribute_maps_make_token_0_attend_with_the_colour_map_plus_the_shape_map(make_tiny_config):
  config = _referent_config(make_tiny_config, 1.0)
  config.image.attribute_maps = True
  config.referent_loss.attribute_weight = 0.5
  batch = example_batch(config, 2, seed=0)
  policy = Policy(config)
  params = policy.init(jax.random.key(0), batch)
  maps = np.asarray(policy.token_maps(params, batch["observation"], batch["task"])["primary"])  # [B, T, h, w, K + 2]
  assert maps.shape[-1] == 4
  np.testing.assert_allclose(maps[..., 0], maps[..., 2] + maps[..., 3], rtol=1e-5, atol=1e-5)
  aux = {"referent_xy": np.full((2, 2, 2), 0.5, np.float32), "referent_valid": np.ones((2, 2), bool),
         "attribute_xy": np.full((2, 2, 6, 2), 0.5, np.float32), "attribute_valid": np.ones((2, 2, 6), bool)}
  rng = jax.random.key(1)
  total, metrics = policy.loss(params, {**batch, "aux": aux}, rng)
  np.testing.assert_allclose(float(total), float(metrics["head_loss"]) + float(metrics["referent_ce"])
                             + 0.5 * float(metrics["attribute_ce"]), rtol=1e-5)
  no_attr = {k: v for k, v in aux.items() if not k.startswith("attribute")}
  with pytest.raises(ValueError, match="data.attribute_objects"):
    policy.loss(params, {**batch, "aux": no_attr}, rng)
  config.image.attribute_maps = False
  plain = Policy(config)
  with pytest.raises(ValueError, match="image.attribute_maps=True"):
    plain.loss(plain.init(jax.random.key(0), batch), {**batch, "aux": aux}, rng)


def _colour_scene(rng: np.random.Generator, batch_size: int, config) -> dict:
  """16×16 frames with a red and a blue 3×3 square; the instruction names one; referent 0 is it."""
  px = config.image_size_px
  images = np.full((batch_size, 1, px, px, 3), 200, np.uint8)
  xy = np.zeros((batch_size, 2, 2), np.float32)
  words = []
  for i in range(batch_size):
    corners = rng.choice(px - 3, size=(2, 2))
    while np.abs(corners[0] - corners[1]).max() < 4:  # Keep the squares apart.
      corners = rng.choice(px - 3, size=(2, 2))
    for (x0, y0), rgb in zip(corners, ((220, 40, 40), (40, 40, 220))):
      images[i, 0, y0:y0 + 3, x0:x0 + 3] = rgb
    named = rng.integers(2)
    words.append(("red", "blue")[named])
    xy[i, 0] = (corners[named] + 1.5) / px  # The square's centre in [0, 1] image units.
  batch = example_batch(config, batch_size, seed=int(rng.integers(1 << 30)))
  batch["observation"]["image_primary"] = images
  batch["task"]["language_tokens"] = language.tokenize(words, config.language.max_len)
  batch["aux"] = {"referent_xy": xy, "referent_valid": np.array([[True, False]] * batch_size)}
  return batch


@pytest.mark.slow  # A small training loop (~11 s).
def test_referent_loss_teaches_the_tokenizer_to_find_the_named_object(make_tiny_config, metric_before_after):
  """Two squares, one named: only reading the instruction *and* the image finds it. The map of
  token 0 must end on the named square (error well under the squares' separation)."""
  config = _referent_config(make_tiny_config, 1.0)
  rng = np.random.default_rng(0)
  pool = [_colour_scene(rng, 16, config) for _ in range(8)]
  held_out = _colour_scene(np.random.default_rng(99), 64, config)
  before, after = metric_before_after(config, pool, held_out, "referent_error")
  assert before > 0.2
  assert after < 0.08, (before, after)
