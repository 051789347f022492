"""The rnnmem exception hierarchy.

Every error rnnmem raises on bad input is a :class:`RnnmemError`; the CLI catches exactly
this class, prints its message on one line and exits with status 2. Subclasses also derive
from the matching builtin (``ValueError``, ``LookupError``, ...) so that generic handlers keep
working.
"""

from __future__ import annotations

__all__ = [
    "RnnmemError",
    "ShapeError",
    "NonFiniteError",
    "InvalidParameterError",
    "UnknownNameError",
    "NameRegistry",
    "UnstableSystemError",
    "CheckpointError",
    "DatasetError",
    "TrainingDivergedError",
    "AlphabetError",
    "DerivationError",
    "ConflictingOptionsError",
    "StorageError",
    "CorruptFileError",
    "CorruptCheckpointError",
    "DirectoryLockedError",
    "RunDirectoryConflictError",
    "NotApplicableError",
    "TaskLengthError",
    "StackCapacityError",
    "SystemCheckError",
    "NonCausalError",
    "TimeVaryingError",
    "RnnmemWarning",
    "BaselineDriftWarning",
    "WarmupWarning",
    "ResourceLimitError",
    "UsageError",
    "exception_text",
    "ExecutorError",
]


class RnnmemError(Exception):
    """Base class of every error rnnmem raises on purpose."""


class ShapeError(RnnmemError, ValueError):
    """An array has the wrong number of dimensions or mismatched sizes."""


class NonFiniteError(RnnmemError, ValueError):
    """An input contains NaN or infinity."""


class InvalidParameterError(RnnmemError, ValueError):
    """A scalar option is out of its admissible range (dt <= 0, a negative width, ...)."""


class UnknownNameError(RnnmemError, KeyError):
    """A name (parameterisation, target, model, claim, language) is not registered.
    (A ``KeyError``, so ``registry[name]`` of a :class:`NameRegistry` keeps the dict
    contract.)"""

    def __init__(self, kind: str, name: object, known: "list[str] | tuple[str, ...]" = ()):
        self.kind, self.name, self.known = kind, name, tuple(known)
        msg = f"unknown {kind} {name!r}"
        if self.known:
            msg += f"; known: {', '.join(sorted(map(str, self.known)))}"
        super().__init__(msg)

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return self.args[0]


class NameRegistry(dict):
    """A dict of registered names whose missing key is an :class:`UnknownNameError`
    listing the known names (``PARAMETERISATIONS["nosuch"]``), not a bare ``KeyError``."""

    def __init__(self, kind: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = kind

    def __missing__(self, key):
        raise UnknownNameError(self.kind, key, list(self))

    def __reduce__(self):
        return (type(self), (self.kind, dict(self)))


class UnstableSystemError(RnnmemError, ValueError):
    """A system assumed to be stable (decaying memory) is not."""


class CheckpointError(RnnmemError):
    """A checkpoint is missing, corrupt, of an unknown model, or otherwise unusable."""


class DatasetError(RnnmemError):
    """A data set cannot be loaded or fails its integrity check."""


class TrainingDivergedError(RnnmemError):
    """The loss became NaN or infinite during training."""


class AlphabetError(RnnmemError, ValueError):
    """A string contains symbols outside a language's alphabet, or is otherwise malformed."""


class DerivationError(RnnmemError):
    """A symbolic derivation could not be completed."""


class ConflictingOptionsError(InvalidParameterError):
    """Two options that are valid alone contradict each other (a stopping rule without
    validation data, a deterministic direction with several repeats, ...); the message
    names both."""

    def __init__(self, first: str, second: str, why: str):
        self.options = (first, second)
        super().__init__(f"{first} contradicts {second}: {why}")
class StorageError(RnnmemError, OSError):
    """A file or directory cannot be written or read (no space, read-only file system,
    permission denied, a directory where a file is expected, ...). ``path`` and ``errno``
    name what and why."""

    def __init__(self, message: str, *, path: str | None = None, errno: int | None = None):
        super().__init__(message)
        self.path, self.errno_code = path, errno

    def __str__(self) -> str:
        return self.args[0]


class CorruptFileError(RnnmemError, ValueError):
    """A file does not match the SHA-256 or size recorded when it was written, or cannot be
    parsed; nothing of it is used. ``path`` names the file."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path


class CorruptCheckpointError(CorruptFileError, CheckpointError):
    """A checkpoint file is corrupt (its SHA-256 does not match its manifest, or it is
    truncated or not a checkpoint at all)."""


class DirectoryLockedError(RnnmemError):
    """Another process is writing the directory (a run directory, a store entry)."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path


class RunDirectoryConflictError(RnnmemError):
    """An output directory already holds another run (a different configuration)."""


class NotApplicableError(RnnmemError):
    """A part of the model contract has no meaning for this model (e.g. the spectrum of a
    stack RNN, whose recurrence is not a fixed linear map); the message names the model,
    the method and what to use instead."""


class TaskLengthError(InvalidParameterError):
    """A task cannot produce a string of the requested length (e.g. an even length for
    DeepMind's ``modular_arithmetic``, whose expressions have odd length)."""


class StackCapacityError(InvalidParameterError):
    """A test length needs more stack cells than a fixed stack depth holds."""


class SystemCheckError(RnnmemError, ValueError):
    """A sequence map fails a structural check that an estimator relies on.

    ``check`` names the check, ``violation`` is the measured relative violation and
    ``threshold`` the tolerance it was compared with (both floats).
    """

    def __init__(self, message: str, *, check: str = "", violation: float = float("nan"),
                 threshold: float = float("nan")):
        self.check, self.violation, self.threshold = check, float(violation), float(threshold)
        super().__init__(message)


class NonCausalError(SystemCheckError):
    """Outputs at step k change when only inputs after k change (or batch rows interact)."""


class TimeVaryingError(SystemCheckError):
    """A delayed input does not give the delayed output (the map is not time-invariant)."""


class RnnmemWarning(UserWarning):
    """Base class of the warnings rnnmem issues about a result's reliability."""


class BaselineDriftWarning(RnnmemWarning):
    """The zero-input response of a system drifts, and the drift is counted as memory."""


class WarmupWarning(RnnmemWarning):
    """The zero-input response did not settle within the allowed warm-up."""


class ResourceLimitError(RnnmemError, ValueError):
    """A run would need more memory (or elements) than is available or than a documented
    cap allows; the message gives the estimate and the limit."""


def exception_text(exc: BaseException) -> str:
    """The whole message of ``exc`` on one line (runs of whitespace, newlines included,
    become one space), or its type name when it has no message. Never cut: a reason at the
    end of a long message (torch's pickled-code refusal, a shape mismatch) is kept."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class UsageError(RnnmemError, ValueError):
    """A command line that does not parse (unknown option, missing argument, bad choice).
    ``prog`` is the command it belongs to (``"rnnmem train"``)."""

    def __init__(self, message: str, *, prog: str = "rnnmem"):
        super().__init__(message)
        self.prog = prog


class ExecutorError(RnnmemError):
    """An executor cannot run a sweep: Ray missing or unreachable, resources (GPUs, CPUs)
    that the machine or cluster does not have."""
