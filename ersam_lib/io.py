"""Safe file access: atomic writes, file locks, content hashes, and reads that name the file when it is damaged.

Used by every chapter that writes into ``RUN_DIR`` (introduced in the foundation, chapter 0):

- writes go to a temporary file in the same folder, then a rename, so that a crash or a kill never leaves a
  half-written manifest, table or checkpoint behind: readers see the old file or the new one;
- :func:`file_lock` serialises writers of a shared file (the run summary, a cache of synthesised speech), and
  :func:`update_json` is the read-modify-write of a JSON record under that lock;
- reads never run code from a data file (no pickle: :func:`load_array` refuses object arrays, :func:`torch_load`
  loads tensors and plain values only), and a damaged file raises :class:`ArtifactError` whose one-line message
  names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "ArtifactError", "atomic_path", "atomic_torch_save", "atomic_write_bytes", "atomic_write_json",
    "atomic_write_text", "file_lock", "load_array", "read_json", "sha256_file", "to_plain", "torch_load",
    "update_json",
]


class ArtifactError(ValueError):
    """A file that exists but is damaged, or does not match what it claims to be made from.

    The message is one line that names the file (and, for files of a run, the command that rebuilds it).
    """


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on error delete it.

    ``suffix`` defaults to the target's suffix, for writers (pandas, soundfile, numpy) that pick a format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically (stable bytes for stable hashes)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing file raises ``FileNotFoundError``, a damaged one :class:`ArtifactError`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e})") from None


def update_json(path: str | os.PathLike, update: Callable[[Any], Any], default: Any = None) -> Any:
    """Read ``path`` (``default`` when missing), apply ``update``, write the result atomically; return it.

    The whole read-modify-write holds :func:`file_lock`, so two processes updating one record (two chapters
    running at once) never lose each other's changes.
    """
    path = Path(path)
    with file_lock(path.with_name(f".{path.name}.lock")):
        current = read_json(path) if path.exists() else default
        new = update(current)
        atomic_write_json(path, new)
        return new


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created if needed); wait while another process holds it.

    An advisory ``flock``: it protects writers that all take it, and the kernel releases it when the holder dies,
    so a killed process never leaves a stale lock behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, modification time) so that loaders can verify large
    arrays on every load without reading them twice in one process."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def load_array(path: str | os.PathLike, mmap_mode: str | None = None) -> Any:
    """``np.load`` of a ``.npy`` file without pickles; a damaged file raises :class:`ArtifactError` naming it."""
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ArtifactError(f"{path} is not a readable NumPy array ({str(e).splitlines()[0]})") from None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (checkpoints survive a kill during the write).

    Save only tensors and plain Python values (dicts, lists, numbers, strings): :func:`torch_load` refuses the rest.
    """
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU: tensors and plain values only, never code from the file.

    A damaged file, or one holding other objects (a pickle that could run code), raises :class:`ArtifactError`.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise ArtifactError(f"{path} holds objects other than tensors and plain values; refused to load it "
                            f"(it could run code){': ' + what[:200] if what else ''}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ArtifactError(f"{path} is not a readable checkpoint ({str(e).splitlines()[0][:200]})") from None


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays, paths and dataclasses turned into plain JSON values (dict, list, ...)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o: Any) -> Any:
    # numpy scalars/arrays and paths appear in metrics; make them JSON without surprising the reader.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")
