"""The policy server's messages: what a client may send, what it gets back, and the checks between.

One connection is one robot: every request carries *one* observation, not a batch —

    image        uint8   [S, S, 3]   the policy's (first) camera's RGB frame (S = image_size_px)
    image_<cam>  uint8   [S, S, 3]   one more per further camera of a multi-camera policy (e.g.
                                     image_wrist; the metadata's `observation` lists them)
    state        float32 [D]         proprioceptive state in env / robot units (float64 is accepted
                                     and cast; every value must be finite)
    prompt       str                 the instruction, plain text (1..MAX_PROMPT_CHARS characters)
    new_episode  bool, optional      True: this observation starts a new episode
    request_id   int, optional       echoed in the reply (and in an error's text), so a client can
                                     tell which request a reply answers
    infer        bool, optional      False: "observe only" — see below (default True)
    guidance     str, optional       real-time chunking: "hard" | "rtc" | "conditioned" (those the
                                     metadata's `observation.guidance.choices` lists); with it,
    prefix_actions  float32 [H, A]   the robot's current plan aligned to this observation's tick
                                     (env units; index i = the action planned for tick t + i), and
    prefix_weights  float32 [H]      the soft mask W in [0, 1] (1: executes while the model thinks;
                                     `vla_jax.models.heads.realtime.prefix_weights`)

and gets back

    actions         float32 [H, A]   the action chunk in env units, oldest step first
    episode_step    int              observations seen in this episode, this one included
    new_episode     bool             whether this request started an episode
    server_timing   {"infer_ms", "decode_ms", "queue_ms", "prev_total_ms"}   (see server.py)
    policy_timing   {"infer_ms", ["reset_ms"]}                              the policy call alone
    request_id      int              only when the request had one

An observe-only request (`infer: false`) pushes its frame into the connection's window under the
same episode rules and is answered with `{"observed": True, "episode_step", "new_episode",
["request_id"]}` — no actions. A robot that executes several actions of a chunk per query sends
every control tick's frame, observe-only between queries, so a policy with a window of T > 1
frames sees the frames it would see in process (`JaxPolicy.observe`).

The server keeps the connection's observation window (the last T frames) between requests, so an
episode starts with the first request, whenever `new_episode` is true, and whenever the prompt
changes (a new instruction is a new task). Why not batches: the window and the episode boundaries
belong to one robot; several robots open several connections.

openpi's control messages (`{"__ctrl__": "episode_start" | "episode_end", ...}`, sent by newer
openpi clients) are acknowledged with `{"__ack__": <name>}` as openpi's server does (any other
`__ctrl__` with `{"__ack__": "ignored"}`); either one ends the current episode here.

A request that fails a check is answered with a text frame `"error: ..."` naming the key, the
shape / dtype it had and the one expected — `"error [request_id=7]: ..."` once the request's id is
known — and the connection stays open.

The optional keys are extensions of openpi's protocol: its client never sends them and gets
exactly openpi's messages back. The metadata's `observation` map lists them (the three guidance keys
only when the served policy can sample a continuation), so a client can check that a server
understands them before sending them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vla_jax.serving import wire

PROTOCOL = "vla_jax.serving/1"
MAX_PROMPT_CHARS = 1024
REQUIRED_KEYS = ("state", "prompt")  # And the policy's frames: `PolicySpec.image_keys`.
OPTIONAL_KEYS = ("new_episode", "request_id", "infer", "guidance", "prefix_actions", "prefix_weights")
GUIDANCE_KEYS = ("guidance", "prefix_actions", "prefix_weights")
CONTROL_KEY = "__ctrl__"


class RequestError(ValueError):
  """A request the server cannot use; the text is sent back to the client (`error_text`).

  request_id: the request's id when it was read before the failing check, else None.
  """

  def __init__(self, message: str, request_id: int | None = None):
    super().__init__(message)
    self.request_id = request_id


def error_text(message: str, request_id: int | None = None) -> str:
  """The text frame of a failed request: "error: ..." or "error [request_id=7]: ..."."""
  return f"error: {message}" if request_id is None else f"error [request_id={request_id}]: {message}"


@dataclasses.dataclass(frozen=True)
class PolicySpec:
  """What a served policy reads and returns (from its model config)."""

  image_size_px: int
  state_dim: int
  action_horizon: int
  action_dim: int
  window_size: int
  # The frames a request carries (`inference.window.robot_image_keys`) and the model camera each
  # feeds, in the same order: ("image",) / ("primary",) for a one-camera policy.
  image_keys: tuple[str, ...]
  cameras: tuple[str, ...]
  guidance: tuple[str, ...] = ()  # Real-time chunking modes the policy can sample ("hard", "rtc", ...).

  def __post_init__(self):
    if not self.image_keys or len(self.image_keys) != len(self.cameras):
      raise ValueError(f"PolicySpec: image_keys {self.image_keys} and cameras {self.cameras} must pair up "
                       "(one robot key per camera, at least one)")

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size_px, self.image_size_px, 3)

  @property
  def required_keys(self) -> tuple[str, ...]:
    return (*self.image_keys, *REQUIRED_KEYS)

  def request_bytes(self) -> int:
    """Size of a well-formed request, roughly: what `max_message_bytes` has to leave room for."""
    return (len(self.image_keys) * self.image_size_px ** 2 * 3 + 4 * self.state_dim + 4 * MAX_PROMPT_CHARS + 512
            + 4 * self.action_horizon * (self.action_dim + 1))  # A prefix and its weights.


@dataclasses.dataclass(frozen=True)
class Request:
  images: dict[str, np.ndarray]  # {robot key ("image", "image_<camera>"): uint8 [S, S, 3]}
  state: np.ndarray  # float32 [D]
  prompt: str
  new_episode: bool
  request_id: int | None = None  # Echoed in the reply when given.
  infer: bool = True  # False: push the frame into the window, return no actions.
  guidance: str | None = None  # With prefix_actions float32 [H, A] and prefix_weights float32 [H].
  prefix_actions: np.ndarray | None = None
  prefix_weights: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Control:
  """An openpi control message: `kind` is the `__ctrl__` value."""

  kind: str


def metadata(spec: PolicySpec, *, backend: str, model_id: str, normalization: dict[str, Any],
             source: dict[str, Any], max_message_bytes: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
  """The message sent once on connect: everything a client needs to build requests and check the model."""
  return {
      "protocol": PROTOCOL,
      "backend": backend,
      "model_id": model_id,
      "source": source,
      "observation": {
          **{key: {"shape": list(spec.image_shape), "dtype": "uint8", "camera": camera}
             for key, camera in zip(spec.image_keys, spec.cameras)},
          "state": {"shape": [spec.state_dim], "dtype": "float32"},
          "prompt": {"dtype": "str", "max_chars": MAX_PROMPT_CHARS},
          "new_episode": {"dtype": "bool", "optional": True},
          "request_id": {"dtype": "int", "optional": True, "echoed": True},
          "infer": {"dtype": "bool", "optional": True, "default": True},
          **({"guidance": {"dtype": "str", "optional": True, "choices": list(spec.guidance)},
              "prefix_actions": {"shape": [spec.action_horizon, spec.action_dim], "dtype": "float32",
                                 "units": "env", "optional": True},
              "prefix_weights": {"shape": [spec.action_horizon], "dtype": "float32", "optional": True}}
             if spec.guidance else {}),
      },
      "action": {"shape": [spec.action_horizon, spec.action_dim], "dtype": "float32", "units": "env"},
      "action_horizon": spec.action_horizon,
      "action_dim": spec.action_dim,
      "window_size": spec.window_size,
      "normalization": normalization,
      "max_message_bytes": max_message_bytes,
      **(extra or {}),
  }


def _describe(value: Any) -> str:
  if isinstance(value, np.ndarray):
    return f"{value.dtype} {list(value.shape)}"
  return type(value).__name__


def parse_request(message: bytes | str, spec: PolicySpec) -> Request | Control:
  """Decodes and checks one frame. Raises `RequestError` naming the key and what was expected."""
  if isinstance(message, str):
    raise RequestError("expected a binary msgpack frame holding an observation map, got a text frame")
  try:
    obj = wire.unpackb(message)
  except wire.WireError as e:
    raise RequestError(str(e)) from None
  if not isinstance(obj, dict):
    raise RequestError(f"request must be a map of observation keys {list(spec.required_keys)}, got {_describe(obj)}")
  if CONTROL_KEY in obj:
    kind = obj[CONTROL_KEY]
    if not isinstance(kind, str):
      raise RequestError(f"key {CONTROL_KEY!r}: expected a str such as 'episode_start', got {_describe(kind)}")
    return Control(kind)

  # The id first: every later error can then name the request it answers.
  request_id = obj.get("request_id")
  if request_id is not None and (not isinstance(request_id, (int, np.integer)) or isinstance(request_id, bool)):
    raise RequestError(f"key 'request_id': expected an int, got {_describe(request_id)}")
  request_id = None if request_id is None else int(request_id)

  def fail(text: str) -> RequestError:
    return RequestError(text, request_id)

  keys = set(obj)
  missing = [k for k in spec.required_keys if k not in keys]
  unknown = sorted(repr(k) for k in keys - set(spec.required_keys) - set(OPTIONAL_KEYS))
  if missing or unknown:
    raise fail(f"request keys: missing {missing}, unknown [{', '.join(unknown)}]; expected "
               f"{list(spec.required_keys)} and optionally {list(OPTIONAL_KEYS)}")

  for key, camera in zip(spec.image_keys, spec.cameras):
    image = obj[key]
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != spec.image_shape:
      raise fail(f"key {key!r}: expected uint8 {list(spec.image_shape)} (one RGB frame of camera {camera!r}), "
                 f"got {_describe(image)}")

  state = obj["state"]
  if (not isinstance(state, np.ndarray) or state.dtype not in (np.float32, np.float64)
      or state.shape != (spec.state_dim,)):
    raise fail(f"key 'state': expected float32 [{spec.state_dim}], got {_describe(state)}")
  with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, reported just below.
    state = state.astype(np.float32)
  if not np.isfinite(state).all():
    bad = np.flatnonzero(~np.isfinite(state)).tolist()
    raise fail(f"key 'state': non-finite values at indices {bad} (NaN or inf after casting to float32)")

  prompt = obj["prompt"]
  if not isinstance(prompt, str):
    raise fail(f"key 'prompt': expected a str (the instruction), got {_describe(prompt)}")
  if not 1 <= len(prompt) <= MAX_PROMPT_CHARS:
    raise fail(f"key 'prompt': expected 1..{MAX_PROMPT_CHARS} characters, got {len(prompt)}")

  flags = {}
  for key, default in (("new_episode", False), ("infer", True)):
    value = obj.get(key, default)
    if not isinstance(value, (bool, np.bool_)):
      raise fail(f"key {key!r}: expected a bool, got {_describe(value)}")
    flags[key] = bool(value)
  return Request(images={k: obj[k] for k in spec.image_keys}, state=state, prompt=str(prompt), request_id=request_id,
                 **flags, **_parse_guidance(obj, spec, flags["infer"], fail))


def _parse_guidance(obj: dict, spec: PolicySpec, infer: bool, fail) -> dict[str, Any]:
  """The real-time chunking keys: all three or none, on an inference request, checked."""
  given = [k for k in GUIDANCE_KEYS if k in obj]
  if not given:
    return {}
  if len(given) < len(GUIDANCE_KEYS):
    raise fail(f"keys {given} given without {[k for k in GUIDANCE_KEYS if k not in obj]}: real-time chunking "
               f"needs all of {list(GUIDANCE_KEYS)}")
  if not infer:
    raise fail("an observe-only request (infer: false) cannot carry guidance: no chunk is sampled")
  guidance = obj["guidance"]
  if not isinstance(guidance, str) or guidance not in spec.guidance:
    raise fail(f"key 'guidance': expected one of {list(spec.guidance)} (what this policy can sample), "
               f"got {guidance!r:.40}")
  arrays = {}
  for key, shape in (("prefix_actions", (spec.action_horizon, spec.action_dim)),
                     ("prefix_weights", (spec.action_horizon,))):
    value = obj[key]
    if (not isinstance(value, np.ndarray) or value.dtype not in (np.float32, np.float64)
        or value.shape != shape):
      raise fail(f"key {key!r}: expected float32 {list(shape)}, got {_describe(value)}")
    with np.errstate(over="ignore"):
      value = value.astype(np.float32)
    if not np.isfinite(value).all():
      raise fail(f"key {key!r}: non-finite values (NaN or inf after casting to float32)")
    arrays[key] = value
  if ((arrays["prefix_weights"] < 0) | (arrays["prefix_weights"] > 1)).any():
    raise fail("key 'prefix_weights': expected values in [0, 1] (1: frozen, 0: free)")
  return {"guidance": guidance, **arrays}


def check_actions(actions: np.ndarray, spec: PolicySpec) -> np.ndarray:
  """The policy's output for one robot: float32 [H, A], all finite — never send a robot a NaN."""
  expected = (spec.action_horizon, spec.action_dim)
  if actions.shape != expected:
    raise RuntimeError(f"the policy returned actions of shape {list(actions.shape)}, expected {list(expected)}")
  if not np.isfinite(actions).all():
    raise RuntimeError("the policy returned non-finite actions (NaN or inf)")
  return actions.astype(np.float32, copy=False)
