"""Published OXE feature structures: a compact notation, `features.json` parsing, and comparison.

Why: an Open X-Embodiment dataset is only read correctly if its keys, dtypes and shapes are the
ones its standardisation was written for. The registry (`registry.py`) records each dataset's
published structure (its TFDS `features.json` / catalog page) in a short notation; this module
turns a dataset directory's `features.json` — or the element structure of an episode inside
tf.data — into the same form, and names the first key that disagrees with the registration.

Notation of one leaf (a string in a nested dict that mirrors the TFDS `FeaturesDict`):

  "f32(7)"        Tensor float32 of shape (7,)   (also i32, i64, u8, bool, str; "f32()" a scalar)
  "f32(7):zlib"   the same, stored zlib-compressed (still bytes after `SkipDecoding`)
  "text"          Text (a scalar string)
  "image(256,320)"      Image uint8 (256, 320, 3)   ("?" for a size the registration leaves open)
  "image_f32(480,640,1)"  Image float32 (a depth map stored as an image)

Paths are tuples of feature names (OXE names may themselves contain "/", e.g. kuka's
`clip_function_input/base_pose_tool_reached`), shown joined by "/".
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Mapping

Path = tuple[str, ...]

_DTYPES = {"f32": "float32", "i32": "int32", "i64": "int64", "u8": "uint8", "bool": "bool", "str": "string"}


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One feature: kind is "tensor" | "image" | "text"; shape None entries are unchecked sizes."""

  kind: str
  dtype: str
  shape: tuple[int | None, ...]
  zlib: bool = False

  def describe(self) -> str:
    dims = ",".join("?" if d is None else str(d) for d in self.shape)
    if self.kind == "text":
      return "Text (string)"
    if self.kind == "image":
      return f"Image {self.dtype} ({dims})"
    return f"Tensor {self.dtype} ({dims})" + (" zlib" if self.zlib else "")

  def matches(self, other: "Leaf") -> bool:
    """Same kind (a Text and a scalar string tensor are the same), dtype and shape (None = any)."""
    def norm(leaf: Leaf) -> tuple[str, str]:
      if leaf.kind == "text" or (leaf.kind == "tensor" and leaf.dtype == "string" and leaf.shape == ()):
        return "text", "string"
      return leaf.kind, leaf.dtype
    if norm(self) != norm(other) or self.zlib != other.zlib or len(self.shape) != len(other.shape):
      return False
    return all(a is None or b is None or a == b for a, b in zip(self.shape, other.shape))


def parse_leaf(text: str) -> Leaf:
  """'f32(7)' / 'image(256,320)' / 'text' / 'bool' -> Leaf (notation in the module docstring)."""
  if text == "text":
    return Leaf("text", "string", ())
  m = re.fullmatch(r"(image_f32|image|f32|i32|i64|u8|bool|str)(?:\(([\d?,\s]*)\))?(:zlib)?", text)
  if not m:
    raise ValueError(f"bad feature notation {text!r}; expected e.g. 'f32(7)', 'image(256,320)', 'text'")
  head, dims, zlib = m.group(1), m.group(2), bool(m.group(3))
  shape = tuple(None if d.strip() == "?" else int(d) for d in dims.split(",") if d.strip()) if dims else ()
  if head.startswith("image"):
    shape = shape + (3,) if len(shape) == 2 else shape
    return Leaf("image", "float32" if head == "image_f32" else "uint8", shape)
  return Leaf("tensor", _DTYPES[head], shape, zlib)


def flatten(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Leaf]:
  """Nested registry dict of notation strings -> {path tuple: Leaf}."""
  out: dict[Path, Leaf] = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, prefix + (key,)))
    else:
      out[prefix + (key,)] = parse_leaf(value)
  return out


def show(path: Path) -> str:
  return "/".join(path)


# ---- features.json (TFDS serialised features). -------------------------------------------------


def _json_leaf(node: Mapping[str, Any]) -> Leaf:
  cls = node.get("pythonClassName", "").rsplit(".", 1)[-1]
  if "text" in node or cls == "Text":
    return Leaf("text", "string", ())
  if "image" in node:
    body = node["image"]
    dims = tuple(int(d) if int(d) >= 0 else None for d in body.get("shape", {}).get("dimensions", []))
    return Leaf("image", body.get("dtype", "uint8"), dims)
  if "tensor" in node:
    body = node["tensor"]
    dims = tuple(int(d) if int(d) >= 0 else None for d in body.get("shape", {}).get("dimensions", []))
    return Leaf("tensor", body["dtype"], dims, body.get("encoding", "none") == "zlib")
  raise ValueError(f"unsupported feature {cls or sorted(node)} in features.json")


def flatten_features_json(node: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Leaf]:
  """A parsed `features.json` -> {path tuple: Leaf} (a `Dataset` of steps adds no path level)."""
  if "featuresDict" in node:
    out: dict[Path, Leaf] = {}
    for key, child in node["featuresDict"]["features"].items():
      out.update(flatten_features_json(child, prefix + (key,)))
    return out
  if "sequence" in node:
    return flatten_features_json(node["sequence"]["feature"], prefix)
  return {prefix: _json_leaf(node)}


def read_features_json(builder_dir: str) -> dict[Path, Leaf]:
  """The flattened structure stored in `<builder_dir>/features.json`."""
  path = os.path.join(builder_dir, "features.json")
  if not os.path.isfile(path):
    raise ValueError(f"no features.json in {builder_dir!r}; is this a TFDS dataset version directory?")
  with open(path) as f:
    return flatten_features_json(json.load(f))


# ---- Comparison. --------------------------------------------------------------------------------


def _siblings(found: Mapping[Path, Leaf], path: Path) -> str:
  """'steps/observation/{image, state}': what exists beside a missing key (or its nearest parent)."""
  for depth in range(len(path) - 1, -1, -1):
    parent = path[:depth]
    names = sorted({p[depth] for p in found if p[:depth] == parent and len(p) > depth})
    if names:
      return f"{show(parent) + '/' if parent else ''}{{{', '.join(names)}}}"
  return "{}"


def first_mismatch(registered: Mapping[Path, Leaf], found: Mapping[Path, Leaf]) -> str | None:
  """None if every registered key exists with a matching leaf, else one sentence about the first
  that does not (registration order): the key, the registered expectation and what was found.
  Keys the dataset has beyond the registration are allowed (newer releases add some)."""
  for path, want in registered.items():
    have = found.get(path)
    if have is None:
      return f"{show(path)}: registered as {want.describe()}, dataset has no such key (it has {_siblings(found, path)})"
    if not want.matches(have):
      return f"{show(path)}: registered as {want.describe()}, dataset has {have.describe()}"
  return None


def as_read(leaf: Leaf, step_level: bool) -> Leaf:
  """What a leaf looks like inside the pipeline's tf.data episode (steps read with SkipDecoding):
  images and zlib tensors stay encoded bytes; step-level leaves gain nothing here (the caller
  strips the leading [T] dim)."""
  if step_level and (leaf.kind == "image" or leaf.zlib):
    return Leaf("tensor", "string", ())
  return leaf
