"""Atomic file writes, strict JSON and file digests: the one implementation d2kd uses.

A killed process must never leave a truncated result where a complete one is expected, so every
write goes to a temporary file in the destination folder, is fsynced, and is renamed over the
target. Leftover temporaries of killed writes start with :data:`TMP_PREFIX` and are removed by
:func:`remove_stale_temporaries`.
"""

import errno
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, List, Union

__all__ = [
    "TMP_PREFIX",
    "DiskFullError",
    "atomic_write",
    "atomic_write_text",
    "write_json",
    "read_json",
    "clean_nan",
    "sha256_file",
    "remove_stale_temporaries",
    "cache_root",
]

PathLike = Union[str, os.PathLike]
TMP_PREFIX = ".tmp-"
# Files written here are ordinary outputs: readable by the group and others, as `open()` makes
# them under the usual umask (mkstemp alone would leave 0600).
_FILE_MODE = 0o644


class DiskFullError(OSError):
    """A write ran out of space; the file it was replacing is intact."""


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save reports a short write from its zip writer as a RuntimeError, not an OSError.
    text = str(exc)
    return "unexpected pos" in text or "No space left" in text or "file write failed" in text


def atomic_write(path: PathLike, write: Callable[[BinaryIO], Any], mode: int = _FILE_MODE) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file that replaces ``path``.

    Args:
        path: the destination; its folder is created if missing.
        write: called with a binary file object open for writing.
        mode: permission bits of the result (0644: like any other output).

    Raises:
        DiskFullError: the disk filled up; ``path`` (if it existed) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _is_disk_full(e):
            kept = f"{path} is intact" if path.exists() else f"{path} was not written"
            raise DiskFullError(
                errno.ENOSPC, f"[d2kd] disk full while writing {path}; {kept} ({e})"
            ) from e
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write a text file atomically (UTF-8)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def clean_nan(obj: Any) -> Any:
    """NaN/Inf -> None, recursively, so the JSON is strict (COCO gives NaN for empty areas)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_nan(v) for v in obj]
    return obj


def write_json(data: Any, path: PathLike) -> Path:
    """Write strict JSON (NaN becomes null) atomically, indented, with a final newline."""
    text = json.dumps(clean_nan(data), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def read_json(path: PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def remove_stale_temporaries(folder: PathLike, patterns: Iterable[str] = ("*",)) -> List[Path]:
    """Delete temporaries that killed :func:`atomic_write` calls left in ``folder``.

    Call it when a process that owns the folder starts (no other writer can be mid-write then).

    Returns:
        the files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for pattern in patterns:
        for p in folder.glob(TMP_PREFIX + pattern):
            if p.is_file():
                p.unlink()
                removed.append(p)
    return removed


def cache_root(root: Union[str, os.PathLike, None] = None) -> Path:
    """Where d2kd caches rendered datasets and trained teachers: ``root`` if given, else
    ``$D2KD_CACHE``, else ``~/.cache/d2kd``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("D2KD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "d2kd"
