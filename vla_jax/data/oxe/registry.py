"""The registry: for each Open X-Embodiment dataset, its published structure and how to read it.

Each entry says where the dataset's cameras, proprio, end-effector action, gripper and instruction
live, in which convention, and records the dataset's published feature structure (`features`, in
the notation of `features.py`) so that a directory that does not match is refused with the first
mismatching key. `transforms.py` turns an entry into a standardisation function, `spec.oxe_spec`
into a dataset spec.

Where the structures come from: the TFDS catalog pages of the OXE datasets (tensorflow/datasets,
`docs/catalog/<tfds_name>.md`, generated from each dataset's `features.json`), Octo's
`octo/data/oxe/oxe_dataset_configs.py` and `oxe_standardization_transforms.py` (which keys and
which gripper convention) and, where they disagree, the dataset's own documentation (noted per
entry). Each entry's `source` names its page. Nothing here reads the network.

Gripper conventions are written from the *dataset's* point of view (see `grippers.py`); Octo
stores 1 = open, this project 1 = close, so every Octo conversion was re-derived, not copied.

Instructions: Octo blanks the instruction of datasets whose text is one template per dataset
(`keep_language=False`); we follow it, since such text teaches the language head nothing and
crowds out real instructions in a mixture. The key is still checked to exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping

from vla_jax.data.oxe import features as features_lib

# Gripper conventions, from the dataset's point of view (converted in `grippers.py`).
GRIPPER_CONVENTIONS = ("relative", "close_is_1", "open_is_1", "open_is_1_binarized", "always_closed",
                       "always_open")


@dataclasses.dataclass(frozen=True)
class Slice:
  """`steps/<path>[..., start:stop]` (stop None = to the end; a scalar feature ignores the slice)."""

  path: tuple[str, ...]
  start: int = 0
  stop: int | None = None

  def size(self, shape: tuple[int | None, ...]) -> int:
    if not shape:
      return 1
    stop = shape[-1] if self.stop is None else self.stop
    return int(stop) - self.start


@dataclasses.dataclass(frozen=True)
class Zeros:
  """Dims the dataset does not have (e.g. rotation of a 2-D pusher), filled with 0."""

  size: int


@dataclasses.dataclass(frozen=True)
class OxeDataset:
  """How to read one OXE dataset. Paths are feature-name tuples under `steps/` unless noted."""

  name: str                          # spec / statistics / mixture name
  tfds_name: str                     # directory under the OXE root (<root>/<tfds_name>/<version>)
  source: str                        # where `features` and the conventions below came from
  features: Mapping[str, Any]        # published structure (nested dict, notation of features.py)
  cameras: Mapping[str, str]         # camera name -> key under steps/observation/
  eef: tuple[Slice | Zeros, ...]     # 6 dims: xyz + rotation, concatenated
  eef_kind: str                      # "relative" (deltas) | "absolute" (poses)
  gripper_convention: str            # one of GRIPPER_CONVENTIONS
  gripper: Slice | None              # the gripper field (None for always_open / always_closed)
  proprio: tuple[Slice, ...]         # concatenated into steps/observation/proprio ( () = none)
  language_level: str                # "step" (steps/<path>) | "episode" (episode_metadata/<path>)
                                     # | "utf8_codes" (int [T, L] of UTF-8 bytes, 0-padded) | "none"
  language_path: tuple[str, ...] | None
  keep_language: bool = True         # False: the text is one template per dataset; blank it
  train_split: str = "train[:95%]"
  val_split: str = "train[95%:]"
  notes: str = ""

  def flat_features(self) -> dict[tuple[str, ...], features_lib.Leaf]:
    return features_lib.flatten(self.features)


def _rtx_steps(**keys: Any) -> dict[str, Any]:
  """Step keys of the datasets Google converted (RT-X naming): no discount, language in observation."""
  return {"is_first": "bool", "is_last": "bool", "is_terminal": "bool", "reward": "f32()", **keys}


def _converted_steps(**keys: Any) -> dict[str, Any]:
  """Step keys of the `*_converted_externally_to_rlds` datasets (the OXE conversion template)."""
  return {"is_first": "bool", "is_last": "bool", "is_terminal": "bool", "reward": "f32()", "discount": "f32()",
          "language_embedding": "f32(512)", "language_instruction": "text", **keys}


_FILE_PATH = {"file_path": "text"}
_WV_RD = (Slice(("action", "world_vector")), Slice(("action", "rotation_delta")))
_A6 = (Slice(("action",), 0, 6),)
_OBS_LANG = ("observation", "natural_language_instruction")
_CATALOG = "tensorflow/datasets docs/catalog/{}.md"

_ENTRIES: tuple[OxeDataset, ...] = (
    OxeDataset(
        name="fractal20220817_data", tfds_name="fractal20220817_data",
        source=_CATALOG.format("fractal20220817_data") + "; Octo rt1_dataset_transform",
        features={
            "aspects": {k: "bool" for k in ("already_success", "feasible", "has_aspects", "success", "undesirable")},
            "attributes": {**{k: "i64()" for k in ("collection_mode", "data_type", "env", "location",
                                                  "objects_family", "task_family")},
                           **{f"{k}_name": "str()" for k in ("collection_mode", "data_type", "env", "location",
                                                            "objects_family", "task_family")}},
            "steps": _rtx_steps(
                action={"base_displacement_vector": "f32(2)", "base_displacement_vertical_rotation": "f32(1)",
                        "gripper_closedness_action": "f32(1)", "rotation_delta": "f32(3)",
                        "terminate_episode": "i32(3)", "world_vector": "f32(3)"},
                observation={"base_pose_tool_reached": "f32(7)", "gripper_closed": "f32(1)",
                             "gripper_closedness_commanded": "f32(1)", "height_to_bottom": "f32(1)",
                             "image": "image(256,320)", "natural_language_embedding": "f32(512)",
                             "natural_language_instruction": "str()", "orientation_box": "f32(2,3)",
                             "orientation_start": "f32(4)", "robot_orientation_positions_box": "f32(3,3)",
                             "rotation_delta_to_go": "f32(3)", "src_rotation": "f32(4)", "vector_to_go": "f32(3)",
                             "workspace_bounds": "f32(3,3)"}),
        },
        cameras={"primary": "image"}, eef=_WV_RD, eef_kind="relative",
        # RT-1: gripper_closedness_action is a relative command, +1 close, -1 open, 0 keep.
        gripper_convention="relative", gripper=Slice(("action", "gripper_closedness_action")),
        proprio=(Slice(("observation", "base_pose_tool_reached")), Slice(("observation", "gripper_closed"))),
        language_level="step", language_path=_OBS_LANG),
    OxeDataset(
        name="kuka", tfds_name="kuka",
        source=_CATALOG.format("kuka") + "; zlib encodings from its features.json; Octo kuka_dataset_transform",
        features={
            "steps": _rtx_steps(
                action={"base_displacement_vector": "f32(2)", "base_displacement_vertical_rotation": "f32(1)",
                        "gripper_closedness_action": "f32(1)", "rotation_delta": "f32(3)",
                        "terminate_episode": "i32(3)", "world_vector": "f32(3)"},
                observation={"clip_function_input/base_pose_tool_reached": "f32(7):zlib",
                             "clip_function_input/workspace_bounds": "f32(3,3)",
                             "gripper_closed": "f32(1):zlib", "height_to_bottom": "f32(1)",
                             "image": "image(512,640)", "natural_language_embedding": "f32(512)",
                             "natural_language_instruction": "str()", "task_id": "f32(1):zlib"}),
            "success": "bool",
        },
        cameras={"primary": "image"}, eef=_WV_RD, eef_kind="relative",
        gripper_convention="relative", gripper=Slice(("action", "gripper_closedness_action")),
        proprio=(Slice(("observation", "clip_function_input/base_pose_tool_reached")),
                 Slice(("observation", "gripper_closed"))),
        language_level="step", language_path=_OBS_LANG, keep_language=False),
    OxeDataset(
        name="bridge", tfds_name="bridge_dataset",
        source=("features.json of Octo's Bridge test fixture (shared/datasets/bridge_debug), the layout of "
                "rail-berkeley's bridge_dataset release Octo/OpenVLA train on; Octo bridge_dataset_transform"),
        features={
            "episode_metadata": {"episode_id": "i32()", "file_path": "text", "has_image_0": "bool",
                                 "has_image_1": "bool", "has_image_2": "bool", "has_image_3": "bool",
                                 "has_language": "bool"},
            # Images: 256x256 in the full release, 64x64 in the debug subset; both are read.
            "steps": _rtx_steps(
                action="f32(7)", discount="f32()", language_embedding="f32(512)", language_instruction="text",
                observation={"image_0": "image(?,?)", "image_1": "image(?,?)", "image_2": "image(?,?)",
                             "image_3": "image(?,?)", "state": "f32(7)"}),
        },
        cameras={"primary": "image_0"}, eef=_A6, eef_kind="relative",
        # Continuous, 1 = open: inverted and binarised at 0.5 (as `standardize.standardize_bridge`).
        gripper_convention="open_is_1_binarized", gripper=Slice(("action",), 6, 7),
        proprio=(Slice(("observation", "state")),),
        language_level="step", language_path=("language_instruction",), train_split="train", val_split="val",
        notes="image_1..3 are extra views present in only some episodes (has_image_k); Octo reads image_0 only"),
    OxeDataset(
        name="taco_play", tfds_name="taco_play",
        source=_CATALOG.format("taco_play") + "; Octo taco_play_dataset_transform",
        features={"steps": _rtx_steps(
            action={"actions": "f32(7)", "rel_actions_gripper": "f32(7)", "rel_actions_world": "f32(7)",
                    "terminate_episode": "f32()"},
            observation={"depth_gripper": "f32(84,84)", "depth_static": "f32(150,200)",
                         "natural_language_embedding": "f32(512)", "natural_language_instruction": "str()",
                         "rgb_gripper": "image(84,84)", "rgb_static": "image(150,200)", "robot_obs": "f32(15)",
                         "structured_language_instruction": "str()"})},
        cameras={"primary": "rgb_static", "wrist": "rgb_gripper"},
        eef=(Slice(("action", "rel_actions_world"), 0, 6),), eef_kind="relative",
        # The catalog text says "-1 is open gripper, 1 is close", but TACO-Play is recorded with CALVIN,
        # whose relative action's gripper_action is "1 (open) or -1 (close)" (CALVIN's env code), and
        # Octo/OpenVLA train on that reading (they use it as 1 = open after clipping to [0, 1]).
        gripper_convention="open_is_1", gripper=Slice(("action", "rel_actions_world"), 6, 7),
        # robot_obs = EE position (3), EE euler (3), gripper width (1), joints (7), gripper action (1).
        proprio=(Slice(("observation", "robot_obs"), 0, 7),),
        language_level="step", language_path=_OBS_LANG, val_split="test", train_split="train"),
    OxeDataset(
        name="jaco_play", tfds_name="jaco_play",
        source=_CATALOG.format("jaco_play") + "; Octo jaco_play_dataset_transform",
        features={"steps": _rtx_steps(
            action={"gripper_closedness_action": "f32(1)", "terminate_episode": "i32(3)", "world_vector": "f32(3)"},
            observation={"end_effector_cartesian_pos": "f32(7)", "end_effector_cartesian_velocity": "f32(6)",
                         "image": "image(224,224)", "image_wrist": "image(224,224)", "joint_pos": "f32(8)",
                         "natural_language_embedding": "f32(512)", "natural_language_instruction": "str()"})},
        cameras={"primary": "image", "wrist": "image_wrist"},
        eef=(Slice(("action", "world_vector")), Zeros(3)), eef_kind="relative",  # No rotation action.
        gripper_convention="relative", gripper=Slice(("action", "gripper_closedness_action")),
        proprio=(Slice(("observation", "end_effector_cartesian_pos")),),
        language_level="step", language_path=_OBS_LANG, val_split="test", train_split="train"),
    OxeDataset(
        name="berkeley_cable_routing", tfds_name="berkeley_cable_routing",
        source=_CATALOG.format("berkeley_cable_routing") + "; Octo berkeley_cable_routing_dataset_transform",
        features={"steps": _rtx_steps(
            action={"rotation_delta": "f32(3)", "terminate_episode": "f32()", "world_vector": "f32(3)"},
            observation={"image": "image(128,128)", "natural_language_embedding": "f32(512)",
                         "natural_language_instruction": "str()", "robot_state": "f32(7)",
                         "top_image": "image(128,128)", "wrist225_image": "image(128,128)",
                         "wrist45_image": "image(128,128)"})},
        cameras={"primary": "image", "wrist": "wrist45_image"}, eef=_WV_RD, eef_kind="relative",
        # No gripper action: the cable is held throughout (Octo writes its "closed").
        gripper_convention="always_closed", gripper=None,
        proprio=(Slice(("observation", "robot_state")),),
        language_level="step", language_path=_OBS_LANG, keep_language=False, val_split="test", train_split="train"),
    OxeDataset(
        name="roboturk", tfds_name="roboturk",
        source=_CATALOG.format("roboturk") + "; Octo roboturk_dataset_transform",
        features={"steps": _rtx_steps(
            action={"gripper_closedness_action": "f32(1)", "rotation_delta": "f32(3)", "terminate_episode": "f32()",
                    "world_vector": "f32(3)"},
            observation={"front_rgb": "image(480,640)", "natural_language_embedding": "f32(512)",
                         "natural_language_instruction": "str()"})},
        cameras={"primary": "front_rgb"}, eef=_WV_RD, eef_kind="relative",
        gripper_convention="close_is_1", gripper=Slice(("action", "gripper_closedness_action")),
        proprio=(), language_level="step", language_path=_OBS_LANG, keep_language=False),
    OxeDataset(
        name="nyu_door_opening", tfds_name="nyu_door_opening_surprising_effectiveness",
        source=_CATALOG.format("nyu_door_opening_surprising_effectiveness") + "; Octo nyu_door_opening_dataset_transform",
        features={"steps": _rtx_steps(
            action={"gripper_closedness_action": "f32(1)", "rotation_delta": "f32(3)", "terminate_episode": "f32()",
                    "world_vector": "f32(3)"},
            observation={"image": "image(720,960)", "natural_language_embedding": "f32(512)",
                         "natural_language_instruction": "str()"})},
        # The only camera is on the Hello Stretch's gripper (Octo maps it to its wrist slot).
        cameras={"wrist": "image"}, eef=_WV_RD, eef_kind="relative",
        gripper_convention="relative", gripper=Slice(("action", "gripper_closedness_action")),
        proprio=(), language_level="step", language_path=_OBS_LANG, keep_language=False,
        train_split="train", val_split="test"),
    OxeDataset(
        name="viola", tfds_name="viola",
        source=_CATALOG.format("viola") + "; Octo viola_dataset_transform",
        features={"steps": _rtx_steps(
            action={"gripper_closedness_action": "f32()", "rotation_delta": "f32(3)", "terminate_episode": "f32()",
                    "world_vector": "f32(3)"},
            observation={"agentview_rgb": "image(224,224)", "ee_states": "f32(16)", "eye_in_hand_rgb": "image(224,224)",
                         "gripper_states": "f32(1)", "joint_states": "f32(7)",
                         "natural_language_embedding": "f32(512)", "natural_language_instruction": "str()"})},
        cameras={"primary": "agentview_rgb", "wrist": "eye_in_hand_rgb"}, eef=_WV_RD, eef_kind="relative",
        gripper_convention="close_is_1", gripper=Slice(("action", "gripper_closedness_action")),
        proprio=(Slice(("observation", "joint_states")), Slice(("observation", "gripper_states"))),
        language_level="step", language_path=_OBS_LANG, keep_language=False, val_split="test", train_split="train"),
    OxeDataset(
        name="berkeley_autolab_ur5", tfds_name="berkeley_autolab_ur5",
        source=_CATALOG.format("berkeley_autolab_ur5") + "; Octo berkeley_autolab_ur5_dataset_transform",
        features={"steps": _rtx_steps(
            action={"gripper_closedness_action": "f32()", "rotation_delta": "f32(3)", "terminate_episode": "f32()",
                    "world_vector": "f32(3)"},
            observation={"hand_image": "image(480,640)", "image": "image(480,640)",
                         "image_with_depth": "image_f32(480,640,1)", "natural_language_embedding": "f32(512)",
                         "natural_language_instruction": "str()", "robot_state": "f32(15)"})},
        cameras={"primary": "image", "wrist": "hand_image"}, eef=_WV_RD, eef_kind="relative",
        # Catalog: "1 if close gripper, -1 if open gripper, 0 if no change".
        gripper_convention="relative", gripper=Slice(("action", "gripper_closedness_action")),
        proprio=(Slice(("observation", "robot_state"), 6, 14),),  # End-effector pose + gripper (Octo).
        language_level="step", language_path=_OBS_LANG),
    OxeDataset(
        name="toto", tfds_name="toto",
        source=_CATALOG.format("toto") + "; Octo toto_dataset_transform",
        features={"steps": _rtx_steps(
            action={"open_gripper": "bool", "rotation_delta": "f32(3)", "terminate_episode": "f32()",
                    "world_vector": "f32(3)"},
            observation={"image": "image(480,640)", "natural_language_embedding": "f32(512)",
                         "natural_language_instruction": "str()", "state": "f32(7)"})},
        cameras={"primary": "image"}, eef=_WV_RD, eef_kind="relative",
        gripper_convention="open_is_1", gripper=Slice(("action", "open_gripper")),
        proprio=(Slice(("observation", "state")),),
        language_level="step", language_path=_OBS_LANG, keep_language=False),
    OxeDataset(
        name="language_table", tfds_name="language_table",
        source=("tensorflow/datasets tensorflow_datasets/robotics/language_table/language_table.py (_features); "
                "Octo language_table_dataset_transform"),
        features={
            "episode_id": "str()",
            "steps": {"action": "f32(2)", "is_first": "bool", "is_last": "bool", "is_terminal": "bool",
                      "reward": "f32()",
                      "observation": {"effector_target_translation": "f32(2)", "effector_translation": "f32(2)",
                                      "instruction": "i32(512)", "rgb": "image(360,640)"}},
        },
        cameras={"primary": "rgb"}, eef=(Slice(("action",)), Zeros(4)), eef_kind="relative",
        # A planar pusher: no gripper; Octo writes its "open".
        gripper_convention="always_open", gripper=None,
        proprio=(Slice(("observation", "effector_translation")),),
        language_level="utf8_codes", language_path=("observation", "instruction")),
    OxeDataset(
        name="stanford_hydra", tfds_name="stanford_hydra_dataset_converted_externally_to_rlds",
        source=_CATALOG.format("stanford_hydra_dataset_converted_externally_to_rlds") + "; Octo stanford_hydra_dataset_transform",
        features={"episode_metadata": _FILE_PATH, "steps": _converted_steps(
            action="f32(7)", is_dense="bool",
            observation={"image": "image(240,320)", "state": "f32(27)", "wrist_image": "image(240,320)"})},
        cameras={"primary": "image", "wrist": "wrist_image"}, eef=_A6, eef_kind="relative",
        # Catalog: action = [3x EEF delta, 3x euler delta, 1x close gripper].
        gripper_convention="close_is_1", gripper=Slice(("action",), 6, 7),
        # state = [pos 3, quat 4, euler 3, joints 7, joint vel 7, gripper 3].
        proprio=(Slice(("observation", "state"), 0, 3), Slice(("observation", "state"), 7, 10),
                 Slice(("observation", "state"), 24, 25)),
        language_level="step", language_path=("language_instruction",), keep_language=False),
    OxeDataset(
        name="austin_buds", tfds_name="austin_buds_dataset_converted_externally_to_rlds",
        source=_CATALOG.format("austin_buds_dataset_converted_externally_to_rlds") + "; Octo austin_buds_dataset_transform",
        features={"episode_metadata": _FILE_PATH, "steps": _converted_steps(
            action="f32(7)", observation={"image": "image(128,128)", "state": "f32(24)", "wrist_image": "image(128,128)"})},
        cameras={"primary": "image", "wrist": "wrist_image"}, eef=_A6, eef_kind="relative",
        gripper_convention="close_is_1", gripper=Slice(("action",), 6, 7),  # -1 open, +1 close (Octo clips).
        proprio=(Slice(("observation", "state"), 0, 8),),  # 7 joints + gripper position.
        language_level="step", language_path=("language_instruction",), keep_language=False),
    OxeDataset(
        name="nyu_franka_play", tfds_name="nyu_franka_play_dataset_converted_externally_to_rlds",
        source=_CATALOG.format("nyu_franka_play_dataset_converted_externally_to_rlds") + "; Octo nyu_franka_play_dataset_transform",
        features={"episode_metadata": _FILE_PATH, "steps": _converted_steps(
            action="f32(15)",
            observation={"depth": "i32(128,128,1)", "depth_additional_view": "i32(128,128,1)",
                         "image": "image(128,128)", "image_additional_view": "image(128,128)", "state": "f32(13)"})},
        cameras={"primary": "image", "secondary": "image_additional_view"},
        # action = [7 joint velocities, 3 EE delta xyz, 3 EE delta rpy, 1 gripper, 1 terminate].
        eef=(Slice(("action",), 7, 13),), eef_kind="relative",
        gripper_convention="open_is_1", gripper=Slice(("action",), 13, 14),
        proprio=(Slice(("observation", "state"), 7, 13),),  # EE xyz + rpy (after 7 joint angles).
        language_level="step", language_path=("language_instruction",), keep_language=False,
        train_split="train", val_split="val"),
    OxeDataset(
        name="ucsd_kitchen", tfds_name="ucsd_kitchen_dataset_converted_externally_to_rlds",
        source=_CATALOG.format("ucsd_kitchen_dataset_converted_externally_to_rlds") + "; Octo ucsd_kitchen_dataset_transform",
        features={"episode_metadata": _FILE_PATH, "steps": _converted_steps(
            action="f32(8)", observation={"image": "image(480,640)", "state": "f32(21)"})},
        cameras={"primary": "image"},
        # action = [EE position (3), orientation (3), gripper open/close, terminate]: absolute poses.
        eef=_A6, eef_kind="absolute",
        gripper_convention="open_is_1", gripper=Slice(("action",), 6, 7),
        proprio=(Slice(("observation", "state"), 0, 7),),  # Joint angles (then velocities, torques).
        language_level="step", language_path=("language_instruction",),
        notes="gripper polarity follows Octo (used as 1 = open without conversion); the catalog does not say"),
    OxeDataset(
        name="austin_sailor", tfds_name="austin_sailor_dataset_converted_externally_to_rlds",
        source=_CATALOG.format("austin_sailor_dataset_converted_externally_to_rlds") + "; Octo austin_sailor_dataset_transform",
        features={"episode_metadata": _FILE_PATH, "steps": _converted_steps(
            action="f32(7)",
            observation={"image": "image(128,128)", "state": "f32(8)", "state_ee": "f32(16)",
                         "state_gripper": "f32(1)", "state_joint": "f32(7)", "wrist_image": "image(128,128)"})},
        cameras={"primary": "image", "wrist": "wrist_image"}, eef=_A6, eef_kind="relative",
        gripper_convention="close_is_1", gripper=Slice(("action",), 6, 7),
        proprio=(Slice(("observation", "state")),),
        language_level="step", language_path=("language_instruction",), keep_language=False),
    OxeDataset(
        name="austin_sirius", tfds_name="austin_sirius_dataset_converted_externally_to_rlds",
        source=_CATALOG.format("austin_sirius_dataset_converted_externally_to_rlds") + "; Octo austin_sirius_dataset_transform",
        features={"episode_metadata": _FILE_PATH, "steps": _converted_steps(
            action="f32(7)", action_mode="f32(1)", intv_label="f32(1)",
            observation={"image": "image(84,84)", "state": "f32(8)", "state_ee": "f32(16)",
                         "state_gripper": "f32(1)", "state_joint": "f32(7)", "wrist_image": "image(84,84)"})},
        cameras={"primary": "image", "wrist": "wrist_image"}, eef=_A6, eef_kind="relative",
        gripper_convention="close_is_1", gripper=Slice(("action",), 6, 7),
        proprio=(Slice(("observation", "state")),),
        language_level="step", language_path=("language_instruction",), keep_language=False),
    OxeDataset(
        name="bc_z", tfds_name="bc_z",
        source=_CATALOG.format("bc_z") + "; Octo bc_z_dataset_transform",
        features={"steps": _rtx_steps(
            action={"future/axis_angle_residual": "f32(30)", "future/target_close": "i64(10)",
                    "future/xyz_residual": "f32(30)"},
            observation={"episode_success": "f32()", "image": "image(171,213)",
                         "natural_language_embedding": "f32(512)", "natural_language_instruction": "str()",
                         "present/autonomous": "i64()", "present/axis_angle": "f32(3)", "present/intervention": "i64()",
                         "present/sensed_close": "f32(1)", "present/xyz": "f32(3)", "sequence_length": "i64()"})},
        cameras={"primary": "image"},
        # The next 10 actions are stored per step; the first is this step's.
        eef=(Slice(("action", "future/xyz_residual"), 0, 3), Slice(("action", "future/axis_angle_residual"), 0, 3)),
        eef_kind="relative",
        gripper_convention="close_is_1", gripper=Slice(("action", "future/target_close"), 0, 1),
        proprio=(Slice(("observation", "present/xyz")), Slice(("observation", "present/axis_angle")),
                 Slice(("observation", "present/sensed_close"))),
        language_level="step", language_path=_OBS_LANG, train_split="train", val_split="val"),
    OxeDataset(
        name="dlr_edan_shared_control", tfds_name="dlr_edan_shared_control_converted_externally_to_rlds",
        source=_CATALOG.format("dlr_edan_shared_control_converted_externally_to_rlds")
        + "; Octo dlr_edan_shared_control_dataset_transform",
        features={"episode_metadata": _FILE_PATH, "steps": _converted_steps(
            action="f32(7)", observation={"image": "image(360,640)", "state": "f32(7)"})},
        cameras={"primary": "image"}, eef=_A6, eef_kind="relative",
        gripper_convention="close_is_1", gripper=Slice(("action",), 6, 7),
        proprio=(Slice(("observation", "state")),),
        language_level="step", language_path=("language_instruction",)),
)

REGISTRY: dict[str, OxeDataset] = {e.name: e for e in _ENTRIES}
_BY_TFDS_NAME: dict[str, OxeDataset] = {e.tfds_name: e for e in _ENTRIES}


def get(name: str) -> OxeDataset:
  """The entry for a registry name or a TFDS directory name (e.g. 'stanford_hydra' or
  'stanford_hydra_dataset_converted_externally_to_rlds')."""
  entry = REGISTRY.get(name) or _BY_TFDS_NAME.get(name)
  if entry is None:
    raise ValueError(f"OXE dataset {name!r} is not registered; registered: {sorted(REGISTRY)} "
                     "(see vla_jax/data/oxe/registry.py to add one)")
  return entry


def standardize_fn_name(entry: OxeDataset) -> str:
  """"oxe/<name>@<digest of the entry>": the spec's `standardize_fn`. The digest puts the entry's
  content into the statistics cache key and the iterator-state fingerprint (both hash the spec), so
  editing an entry recomputes statistics instead of reusing stale ones. "oxe/<name>" is registered
  too, for hand-written specs."""
  return f"oxe/{entry.name}@{hashlib.sha256(repr(entry).encode()).hexdigest()[:10]}"


def check_entry(entry: OxeDataset) -> None:
  """An entry's own consistency: keys it reads exist in its published structure, 6 eef dims."""
  flat = entry.flat_features()
  where = f"OXE registry entry '{entry.name}'"
  if entry.gripper_convention not in GRIPPER_CONVENTIONS:
    raise ValueError(f"{where}: gripper_convention {entry.gripper_convention!r} not in {GRIPPER_CONVENTIONS}")
  if (entry.gripper is None) != entry.gripper_convention.startswith("always_"):
    raise ValueError(f"{where}: gripper must be None exactly for the always_* conventions")
  parts = [p for p in entry.eef + entry.proprio + ((entry.gripper,) if entry.gripper else ()) if isinstance(p, Slice)]
  for part in parts:
    if ("steps",) + part.path not in flat:
      raise ValueError(f"{where}: reads steps/{'/'.join(part.path)}, not in its registered features")
  for cam, key in entry.cameras.items():
    leaf = flat.get(("steps", "observation", key))
    if leaf is None or leaf.kind != "image":
      raise ValueError(f"{where}: camera '{cam}' -> steps/observation/{key} is not a registered image")
  eef_dims = sum(p.size if isinstance(p, Zeros) else p.size(flat[("steps",) + p.path].shape) for p in entry.eef)
  if eef_dims != 6:
    raise ValueError(f"{where}: eef parts give {eef_dims} dims, want 6 (xyz + rotation)")
  if entry.language_level != "none":
    prefix = ("episode_metadata",) if entry.language_level == "episode" else ("steps",)
    if entry.language_path is None or prefix + entry.language_path not in flat:
      raise ValueError(f"{where}: language {entry.language_path} not in its registered features")


def proprio_dim(entry: OxeDataset) -> int:
  flat = entry.flat_features()
  return sum(p.size(flat[("steps",) + p.path].shape) for p in entry.proprio)


def camera_sizes(entry: OxeDataset) -> dict[str, tuple[int | None, int | None]]:
  """{camera name: (height, width)} as registered (None = left open)."""
  flat = entry.flat_features()
  return {cam: tuple(flat[("steps", "observation", key)].shape[:2]) for cam, key in entry.cameras.items()}
