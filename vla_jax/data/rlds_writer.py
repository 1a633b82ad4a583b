"""Writing generated RLDS datasets with TFDS, the one way every dataset of this project is written
(scripted-expert tabletop data, Meta-World expert data, recorded robot trials).

`GeneratedBuilder` is a TFDS builder whose examples are made here, never downloaded: no checksum
file is looked up and TFDS's "Downloading and preparing ..." lines (which would name the temporary
directory) are not printed. `write_atomically` builds into a temporary directory beside the
destination and renames it into place only when TFDS has finished, so an interrupted write never
leaves a dataset that looks complete, and a replaced dataset is swapped, not overwritten file by file.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, TypeVar

import tensorflow_datasets as tfds


class GeneratedBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the project's builders (subclasses define VERSION, `_info` and the generators)."""

  @tfds.core.utils.classproperty
  @classmethod
  def _checksums_path(cls):
    # TFDS would look for a checksums file beside the module (needs `importlib_resources`), which
    # is meaningless for a generated dataset.
    return None

  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass


BuilderT = TypeVar("BuilderT", bound=GeneratedBuilder)


def named(cls: type[BuilderT], name: str) -> type[BuilderT]:
  """`cls` under another dataset name (TFDS takes the on-disk directory name from the class)."""
  if name == cls.name:
    return cls
  with tfds.core.registered.skip_registration():
    return type(f"{cls.__name__}_{name}", (cls,), {"name": name})


def is_complete(path: str | Path) -> bool:
  """A finished TFDS dataset directory has its dataset_info.json (written last, then renamed in)."""
  return (Path(path) / "dataset_info.json").is_file()


def remove_stale_temp_dirs(root: Path, name: str) -> None:
  """Removes `.tmp-<name>-<pid>-*` directories whose writer process is gone."""
  for tmp in root.glob(f".tmp-{name}-*"):
    parts = tmp.name.rsplit("-", 2)
    pid = int(parts[-2]) if len(parts) == 3 and parts[-2].isdigit() else -1
    try:
      if pid <= 0:
        raise ValueError(pid)
      os.kill(pid, 0)  # Still running: another writer's temp dir, leave it.
    except (OSError, ValueError):
      shutil.rmtree(tmp, ignore_errors=True)


def write_atomically(make_builder: Callable[[str], GeneratedBuilder], data_dir: str | Path, name: str,
                     version: str, overwrite: bool = False) -> Path:
  """Builds `<data_dir>/<name>/<version>` with `make_builder(tmp_data_dir)` and swaps it in.

  Raises FileExistsError when a finished dataset is there and `overwrite` is False.
  """
  root = Path(data_dir)
  final = root / name / version
  if is_complete(final) and not overwrite:
    raise FileExistsError(f"{final} already holds a finished dataset; pass overwrite=True "
                          "(--overwrite on the command line) to replace it")
  root.mkdir(parents=True, exist_ok=True)
  remove_stale_temp_dirs(root, name)
  tmp_root = root / f".tmp-{name}-{os.getpid()}-{time.time_ns()}"
  try:
    builder = make_builder(str(tmp_root))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    final.parent.mkdir(parents=True, exist_ok=True)
    trash = None
    if final.exists():
      trash = final.with_name(f".trash-{version}-{os.getpid()}")
      final.rename(trash)
    (tmp_root / name / version).rename(final)
    if trash is not None:
      shutil.rmtree(trash, ignore_errors=True)
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  return final
