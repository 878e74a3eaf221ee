"""Safe file access: atomic writes, file locks, content hashes, and reads that name the file when it is damaged.

Used by every chapter that writes into ``RUN_DIR`` (introduced in the foundation, chapter 0):

- writes go to a temporary file in the same folder, then a rename, so that a crash or a kill never leaves a
  half-written manifest, table or checkpoint behind: readers see the old file or the new one;
- :func:`file_lock` serialises writers of a shared file (the run summary, a cache of synthesised speech), and
  :func:`update_json` is the read-modify-write of a JSON record under that lock;
- reads never run code from a data file (no pickle: :func:`load_array` refuses object arrays, :func:`torch_load`
  loads tensors and plain values only), and a damaged file raises :class:`ArtifactError` whose one-line message
  names it;
- every weight file records its SHA-256 beside it (``<file>.sha256``, the format of ``sha256sum``, written by
  :func:`atomic_torch_save` and :func:`write_digest`) and :func:`torch_load` checks it before reading: damaged
  weights often still load (a flipped bit in a float is a valid float), so the digest, not the reader, finds them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import math
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "ArtifactError", "allocate", "atomic_path", "atomic_torch_save", "atomic_write_bytes", "atomic_write_json",
    "atomic_write_text", "check_digest", "digest_path", "file_lock", "load_array", "read_json", "sha256_file",
    "to_plain", "torch_load", "update_json", "write_digest",
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
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the mode open() would give it
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise _write_error(path, e) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; set it back at once
    os.umask(mask)
    return mask


def _write_error(path: Path, e: OSError) -> OSError:
    """``e`` as an error whose one line names ``path`` and says when the disk is full (numpy and others write
    "N requested and M written" with no errno when the device fills up)."""
    full = e.errno == errno.ENOSPC or "requested and" in str(e)
    with contextlib.suppress(OSError):
        full = full or shutil.disk_usage(path.parent).free == 0
    if full:
        return OSError(errno.ENOSPC, f"no space left on the device writing {path}: free some space and run it "
                                     f"again ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    if str(path) in str(e):
        return e
    return type(e)(e.errno, f"cannot write {path}: {e.strerror or e}") if e.errno else \
        OSError(f"cannot write {path}: {e}")


def allocate(path: str | os.PathLike) -> None:
    """Reserve the disk blocks of a sparse file (a fresh ``np.lib.format.open_memmap``) now: a full disk is then an
    ``ENOSPC`` error here, rather than a SIGBUS that kills the process at its first write into a page with no block
    behind it."""
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


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
    """Write ``obj`` as indented, key-sorted JSON atomically (stable bytes for stable hashes).

    Not-a-number and infinite floats are written as ``null``: JSON has no such values, and other tools refuse the
    ``NaN`` that Python's encoder writes by default."""
    return atomic_write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=True, default=_json_default,
                                              allow_nan=False) + "\n")


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
def file_lock(path: str | os.PathLike, waiting: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created if needed) or on the folder ``path`` (an existing one:
    no lock file is left in it); wait while another process holds it, after printing ``waiting`` (when given) to
    standard error.

    An advisory ``flock``: it protects writers that all take it, and the kernel releases it when the holder dies,
    so a killed process never leaves a stale lock behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)  # never through a planted link
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(waiting, file=sys.stderr, flush=True)
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
    The file's SHA-256 goes to ``<path>.sha256`` after it (:func:`write_digest`), what :func:`torch_load` checks.
    """
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    write_digest(path)
    return Path(path)


def digest_path(path: str | os.PathLike) -> Path:
    """``<path>.sha256``: the digest record beside a weight or program file."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_digest(path: str | os.PathLike) -> str:
    """Record the SHA-256 of ``path`` beside it, as ``sha256sum`` writes it (``sha256sum -c`` checks it); return it.

    Written after the file: a crash between the two leaves a record that does not match, read as damage (rebuilt),
    never as a good file."""
    path = Path(path)
    digest = sha256_file(path)
    atomic_write_text(digest_path(path), f"{digest}  {path.name}\n")
    return digest


def check_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of ``path`` when it equals the one recorded beside it; :class:`ArtifactError` naming the file when
    the record is missing, unreadable or different (the file was damaged or replaced since it was written)."""
    path = Path(path)
    record = digest_path(path)
    try:
        recorded = record.read_text(encoding="utf-8").split()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        raise ArtifactError(f"{path} has no readable digest record {record.name} beside it, so it cannot be "
                            f"checked") from None
    actual = sha256_file(path)
    if actual != recorded:
        raise ArtifactError(f"{path} does not match the SHA-256 recorded in {record.name} (damaged or replaced "
                            f"since it was written)")
    return actual


def torch_load(path: str | os.PathLike, verify: bool = True) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU: tensors and plain values only, never code from the file.

    With ``verify`` (the default) the file must match the digest recorded beside it (:func:`check_digest`). A
    damaged file, or one holding other objects (a pickle that could run code), raises :class:`ArtifactError`.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if verify:
        check_digest(path)
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


def _finite(obj: Any) -> Any:
    """``obj`` with non-finite floats (NaN, infinities) replaced by ``None`` in dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(o: Any) -> Any:
    # numpy scalars/arrays and paths appear in metrics; make them JSON without surprising the reader.
    if hasattr(o, "tolist"):
        return _finite(o.tolist())
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")
