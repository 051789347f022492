"""A small on-disk cache of derived *text* (standard library only: importing it loads
neither sympy nor torch, nor any rnnmem sub-package).

Symbolic derivations (``rnnmem derive``) and the registry listing (``rnnmem list``) are pure
functions of their inputs -- the sympy expression, the sympy version, the code that
derives -- but take seconds to recompute. :func:`cached_text` stores the result under a
SHA-256 of a JSON *key* that names every such input, so a change of any of them gives a
new key (the old entry is never read again). An entry is written once, atomically
(temporary name, fsync, rename) and carries the SHA-256 of its text, checked on read; a
corrupt or unreadable entry is recomputed.

Location: ``$RNNMEM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/rnnmem`` (default
``~/.cache/rnnmem``). ``RNNMEM_NO_CACHE=1`` turns the cache off (always recompute). The
cache is an optimisation only: when the directory cannot be written, the value is
computed and returned as if there were no cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable

__all__ = ["cache_dir", "cached_text", "lookup", "store", "enabled", "package_version",
           "source_digest"]


def cache_dir() -> Path:
    """The cache root (see the module docstring)."""
    env = os.environ.get("RNNMEM_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnmem"


def package_version(name: str) -> str:
    """The installed version of distribution ``name`` (read from its metadata, without
    importing it), or ``"absent"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def source_digest(*roots: Path | str) -> str:
    """SHA-256 over (relative path, size, mtime_ns) of every ``*.py`` file under ``roots``
    (files or directories): any edit of the code changes it. Only ``stat`` is called."""
    h = hashlib.sha256()
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            h.update(f"{f.as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _key_hash(kind: str, key: dict) -> str:
    blob = json.dumps({"kind": kind, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_text(kind: str, key: dict, compute: Callable[[], str]) -> str:
    """``compute()``, or the text it returned earlier for the same ``kind`` and ``key``.

    Parameters
    ----------
    kind : str
        A namespace (a directory under :func:`cache_dir`), e.g. ``"derive"``.
    key : dict
        JSON-serialisable; must name *every* input the text depends on (expression,
        library versions, a digest of the deriving code). Equal keys -> same entry.
    compute : callable
        Returns the text; called on a miss (and when the cache is off or unusable).
    """
    text = lookup(kind, key)
    if text is None:
        text = compute()
        store(kind, key, text)
    return text


def enabled() -> bool:
    """Whether the cache is on (``RNNMEM_NO_CACHE`` unset or ``0``)."""
    return os.environ.get("RNNMEM_NO_CACHE", "") in ("", "0")


def _path(kind: str, key: dict) -> Path:
    return cache_dir() / kind / f"{_key_hash(kind, key)}.json"


def lookup(kind: str, key: dict) -> str | None:
    """The stored text for ``kind``/``key``, or None (missing, corrupt, cache off)."""
    if not enabled():
        return None
    try:
        entry = json.loads(_path(kind, key).read_text(encoding="utf-8"))
        text = entry["text"]
        if hashlib.sha256(text.encode()).hexdigest() == entry["sha256"]:
            return text
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def store(kind: str, key: dict, text: str) -> None:
    """Write ``text`` under ``kind``/``key`` (atomically; silently nothing if the cache is
    off or its directory cannot be written)."""
    if enabled():
        _write(_path(kind, key), {"kind": kind, "key": key, "text": text,
                                  "sha256": hashlib.sha256(text.encode()).hexdigest()})


def _write(path: Path, entry: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:  # a read-only home: no cache, same result
        pass
