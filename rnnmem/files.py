"""Files, written once and read only when they are what was written (stdlib only).

Every file rnnmem writes (checkpoints, configs, metrics, reports, figures, run-store entries)
goes through :func:`atomic_write` (or :func:`atomic_writer` for writers that need a file
object): the bytes go to a temporary file in the same directory, are flushed and
``fsync``-ed, the file gets the mode of an ordinary file (``0o666 & ~umask``; ``mkstemp``
would leave ``0o600``), is renamed over the target, and the directory is ``fsync``-ed so that
the rename itself survives a power cut. A reader therefore sees the old file or the new one,
never a mixture. A crashed writer can leave its temporary (``.NAME.XXXX.tmp``) behind;
:func:`remove_stale_temporaries` removes them (call it while holding the directory's
:class:`DirLock`).

Integrity: :func:`write_manifest` records the SHA-256 and size of every file of a directory
in ``manifest.json``; :func:`verify_manifest` recomputes them and raises
:class:`rnnmem.errors.CorruptFileError` naming the first file that does not match.

Exclusive directories: :class:`DirLock` holds an advisory ``flock`` on ``DIR/.lock`` while a
process writes into ``DIR``; a second writer is refused with
:class:`rnnmem.errors.DirectoryLockedError` naming the holder's pid and command line.

JSON: :func:`to_jsonable` is the one sanitiser (numpy scalars and arrays to lists, tuples to
lists, non-finite floats to ``null``, paths to strings); :func:`write_json` writes through it.

This module sits below every layer (it imports only the standard library and
:mod:`rnnmem.errors`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

from .errors import CorruptFileError, DirectoryLockedError, StorageError

__all__ = [
    "atomic_write",
    "atomic_writer",
    "write_json",
    "read_json",
    "to_jsonable",
    "sha256_file",
    "write_manifest",
    "verify_manifest",
    "MANIFEST",
    "DirLock",
    "remove_stale_temporaries",
    "storage_error",
]

#: name of the manifest file inside a directory
MANIFEST = "manifest.json"
_TMP_SUFFIX = ".tmp"
_LOCK = ".lock"

_ERRNO_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space or choose another directory",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another directory",
    errno.EROFS: "the file system is read-only; choose a writable directory",
    errno.EACCES: "permission denied; choose a directory you can write to",
    errno.EPERM: "operation not permitted; choose a directory you can write to",
    errno.EISDIR: "it is a directory, not a file",
    errno.ENOTDIR: "a component of the path is a file, not a directory",
    errno.EEXIST: "it already exists",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "the file name is too long",
}


def storage_error(exc: OSError, path: str | os.PathLike, action: str = "write") -> StorageError:
    """The named error for an :class:`OSError` met while doing ``action`` on ``path``."""
    code = exc.errno if isinstance(exc, OSError) else None
    reason = _ERRNO_ADVICE.get(code) or (exc.strerror or str(exc))
    return StorageError(f"cannot {action} {os.fspath(path)!s}: {reason}", path=os.fspath(path),
                        errno=code)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so that a rename in it is durable (not possible on every OS)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, binary: bool = True) -> Iterator[IO]:
    """A file object whose content replaces ``path`` atomically when the block exits.

    If the block raises, the target is left untouched and the temporary is removed.
    OS errors become :class:`rnnmem.errors.StorageError` naming the path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                   suffix=_TMP_SUFFIX)
    except OSError as exc:
        raise storage_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb" if binary else "w",
                       **({} if binary else {"encoding": "utf-8", "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise storage_error(exc, path) from None
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; return the path."""
    with atomic_writer(path, binary=True) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays and tuples become lists or numbers,
    non-finite floats become ``None`` (JSON has no NaN), paths and other objects strings,
    mapping keys strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    np = sys.modules.get("numpy")  # only if already imported: never import it here
    if np is not None:
        if isinstance(obj, np.ndarray):
            return to_jsonable(obj.tolist())
        if isinstance(obj, np.generic):
            return to_jsonable(obj.item())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # torch tensors and the like
        return to_jsonable(obj.tolist())
    return str(obj)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``to_jsonable(obj)`` as JSON (sorted keys), atomically."""
    text = json.dumps(to_jsonable(obj), indent=indent, sort_keys=True, allow_nan=False)
    return atomic_write(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing, unreadable or malformed file is a named error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise storage_error(exc, path, "read") from None
    except UnicodeDecodeError:
        raise CorruptFileError(f"{path} is not a UTF-8 text file", path=str(path)) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CorruptFileError(f"{path} is not valid JSON ({exc})", path=str(path)) from None


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    except OSError as exc:
        raise storage_error(exc, path, "read") from None
    return h.hexdigest()


def _manifest_files(directory: Path) -> list[str]:
    out = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if p.is_file() and rel != MANIFEST and not p.name.startswith("."):
            out.append(rel)
    return out


def write_manifest(directory: str | os.PathLike, files: list[str] | None = None,
                   extra: Mapping[str, Any] | None = None) -> dict:
    """Record ``{relative path: {"sha256", "size"}}`` of ``files`` (default: every
    non-hidden file under ``directory``) in ``directory/manifest.json``; return it."""
    directory = Path(directory)
    names = _manifest_files(directory) if files is None else list(files)
    entries = {}
    for rel in names:
        p = directory / rel
        entries[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    manifest = {"files": entries, **(dict(extra) if extra else {})}
    write_json(directory / MANIFEST, manifest)
    return manifest


def verify_manifest(directory: str | os.PathLike, files: list[str] | None = None) -> dict:
    """Check the files of ``directory`` against its manifest (all recorded files, or only
    ``files``); return the manifest. Raises :class:`CorruptFileError` naming the first file
    that is missing or whose size or SHA-256 differs, and when the manifest itself is
    missing or malformed."""
    directory = Path(directory)
    mpath = directory / MANIFEST
    if not mpath.is_file():
        raise CorruptFileError(f"{directory}: no {MANIFEST} (not written by rnnmem, or the "
                               f"write did not finish)", path=str(mpath))
    manifest = read_json(mpath)
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, dict):
        raise CorruptFileError(f"{mpath}: malformed manifest (no 'files' mapping)",
                               path=str(mpath))
    for rel in (entries if files is None else files):
        rec = entries.get(rel)
        p = directory / rel
        if not isinstance(rec, dict) or "sha256" not in rec:
            raise CorruptFileError(f"{p}: not recorded in {MANIFEST}", path=str(p))
        if not p.is_file():
            raise CorruptFileError(f"{p}: recorded in {MANIFEST} but missing", path=str(p))
        size = p.stat().st_size
        if size != rec.get("size", size):
            raise CorruptFileError(f"{p}: size {size} does not match the manifest's "
                                   f"{rec['size']} (truncated or changed); not used",
                                   path=str(p))
        if sha256_file(p) != rec["sha256"]:
            raise CorruptFileError(f"{p}: SHA-256 does not match the manifest (the file was "
                                   f"corrupted or changed after it was written); not used",
                                   path=str(p))
    return manifest


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Remove ``.NAME.XXXX.tmp`` files left by crashed writers; return their names.

    Only call this while holding ``directory``'s :class:`DirLock` (a live writer's
    temporary would otherwise be removed under it)."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if p.name.startswith(".") and p.name.endswith(_TMP_SUFFIX) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p.name)
    return removed


class DirLock:
    """An exclusive advisory lock on a directory (``flock`` on ``DIR/.lock``).

    Held by one process at a time; released when the process exits, whatever the way (the
    kernel drops ``flock`` locks with the file descriptor), so a killed writer never leaves a
    stale lock. ``DirLock(d).acquire(blocking=False)`` raises
    :class:`rnnmem.errors.DirectoryLockedError` naming the holder when another process
    holds it; ``blocking=True`` waits (up to ``timeout`` seconds, if given).

    Use as a context manager::

        with DirLock(run_dir):
            ...  # the only writer of run_dir
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _holder(self) -> str:
        try:
            text = (self.directory / _LOCK).read_text(encoding="utf-8").strip()
        except OSError:
            return "another process"
        return text or "another process"

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> "DirLock":
        import fcntl

        if self._fd is not None:
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as exc:
            raise storage_error(exc, self.directory, "lock") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise storage_error(exc, self.directory, "lock") from None
                if not blocking or (deadline is not None and time.monotonic() > deadline):
                    os.close(fd)
                    raise DirectoryLockedError(
                        f"{self.directory} is being written by {self._holder()}; wait for "
                        f"it to finish or use another directory",
                        path=str(self.directory)) from None
                time.sleep(0.05)
        # record who holds it (for the message a second writer gets)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({' '.join(sys.argv)})\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # pragma: no cover - released by the kernel anyway
        with contextlib.suppress(Exception):
            self.release()
