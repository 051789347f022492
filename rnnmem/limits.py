"""One input-validation layer for seeds, counts and sizes (stdlib only).

Every entry point that takes a seed, a size, a length or a grid (the CLI commands, the
model constructors, :class:`rnnmem.train.TrainConfig`, the tasks, the perturbation and
evaluation grids) checks it here, before allocating anything:

- :func:`check_seed`: an integer in ``[0, 2**63 - 1]`` (what numpy, torch and Python's
  ``random`` all accept; ``2**70`` overflows torch, ``-1`` numpy).
- :func:`check_count`: an integer in ``[minimum, MAX_COUNT]`` (lengths, numbers of points,
  repeats, bins); a float such as ``1e11`` is refused, not truncated.
- :func:`check_memory`: an estimate of the bytes a run would allocate, refused with the
  estimate when it exceeds the limit: the memory available now (``MemAvailable`` of
  ``/proc/meminfo``) or, if lower, the documented cap ``RNNMEM_MAX_BYTES`` (bytes; an
  environment variable, unset by default).

All refusals are :class:`rnnmem.errors.InvalidParameterError` (bad value) or
:class:`rnnmem.errors.ResourceLimitError` (too large), whose message names the argument.
"""

from __future__ import annotations

import numbers
import os

from .errors import InvalidParameterError, ResourceLimitError

__all__ = ["SEED_MAX", "MAX_COUNT", "check_seed", "parse_seed", "check_count", "parse_count",
           "check_memory", "memory_limit", "available_memory", "format_bytes"]

#: largest seed accepted everywhere (numpy, torch and ``random`` accept [0, 2**63 - 1])
SEED_MAX = 2**63 - 1
#: largest count (length, number of points, repeats, ...) accepted by :func:`check_count`
MAX_COUNT = 10**9
#: environment variable holding an optional cap on the bytes a run may allocate
CAP_ENV = "RNNMEM_MAX_BYTES"


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_seed(value, name: str = "seed", *, optional: bool = False):
    """``value`` as an ``int`` in ``[0, 2**63 - 1]`` (``None`` allowed if ``optional``)."""
    if value is None and optional:
        return None
    if not _is_int(value):
        raise InvalidParameterError(f"{name} must be an integer in [0, 2**63 - 1], got "
                                    f"{value!r}")
    v = int(value)
    if not 0 <= v <= SEED_MAX:
        raise InvalidParameterError(f"{name} must be in [0, 2**63 - 1], got {v}")
    return v


def _parse_int(text, name: str) -> int:
    if _is_int(text):
        return int(text)
    s = str(text).strip()
    try:
        return int(s)
    except ValueError:
        pass
    try:  # "1e3" is 1000, "2.5" is refused (not truncated)
        f = float(s)
    except ValueError:
        raise InvalidParameterError(f"{name}: expected an integer, got {text!r}") from None
    if f != f or f in (float("inf"), float("-inf")) or f != int(f):
        raise InvalidParameterError(f"{name}: expected an integer, got {text!r}")
    return int(f)


def parse_seed(text, name: str = "--seed") -> int:
    """A command-line seed (``"7"``) checked by :func:`check_seed`."""
    return check_seed(_parse_int(text, name), name)


def check_count(value, name: str, *, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``."""
    if not _is_int(value):
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    v = int(value)
    if v < minimum:
        raise InvalidParameterError(f"{name} must be >= {minimum}, got {v}")
    if v > maximum:
        raise ResourceLimitError(f"{name} = {v} is above the limit {maximum}")
    return v


def parse_count(text, name: str, *, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """A command-line count (``"200"``, ``"1e3"``) checked by :func:`check_count`."""
    return check_count(_parse_int(text, name), name, minimum=minimum, maximum=maximum)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``; else free physical pages),
    or None when the platform does not tell."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def memory_limit() -> tuple[int | None, str]:
    """(the byte limit of :func:`check_memory`, where it comes from)."""
    avail = available_memory()
    cap_text = os.environ.get(CAP_ENV, "").strip()
    cap = None
    if cap_text:
        try:
            cap = int(float(cap_text))
        except ValueError:
            raise InvalidParameterError(f"{CAP_ENV}={cap_text!r} must be a number of bytes") \
                from None
    if cap is not None and (avail is None or cap < avail):
        return cap, f"cap {CAP_ENV}"
    return avail, "available memory"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def check_memory(n_bytes: float, what: str, hint: str = "use smaller sizes") -> None:
    """Refuse (``ResourceLimitError``) when ``n_bytes``, the estimated allocation of
    ``what`` (name the arguments, e.g. ``"state_dim=100000"``), exceeds
    :func:`memory_limit`."""
    limit, source = memory_limit()
    if limit is not None and n_bytes > limit:
        raise ResourceLimitError(f"{what} would allocate about {format_bytes(n_bytes)}, more "
                                 f"than the {source} ({format_bytes(limit)}); {hint}")
