"""Device and dtype resolution, chosen once at the top (nanoGPT style), and the thread
count of small step loops (:func:`step_threads`)."""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from ..errors import InvalidParameterError

__all__ = ["resolve_device", "resolve_dtype", "DTYPES", "step_threads", "SERIAL_STEP_WORK",
           "gate_work", "StepLoop"]

DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to torch."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise InvalidParameterError(f"device must be a string such as 'cpu' or 'cuda:0', got "
                                    f"{type(device).__name__} {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError(f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_dtype(dtype="float32") -> torch.dtype:
    """A torch dtype from a dtype or its name (``"float64"``)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InvalidParameterError(f"unsupported dtype {dtype}; use one of {list(DTYPES)}")
        return dtype
    name = str(dtype).replace("torch.", "")
    try:
        return DTYPES[name]
    except KeyError:
        raise InvalidParameterError(
            f"unknown dtype {dtype!r}; use one of {list(DTYPES)}") from None


def _passive_wait() -> bool:
    """Whether OpenMP's idle threads sleep at once, as libgomp reads the environment:
    ``GOMP_SPINCOUNT`` when set (sleep at once: 0), else ``OMP_WAIT_POLICY=PASSIVE``
    (measured: ``OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=10000`` spins). Read when this
    module is imported, just after torch loaded libgomp: a later change of the variables
    reaches neither."""
    spin = os.environ.get("GOMP_SPINCOUNT", "").strip()
    if spin:
        return spin == "0"
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


#: Per-step work (multiply-adds of a step's gate product) below which a step loop runs on
#: one torch thread (:func:`step_threads`). A step loop opens a few parallel regions per
#: step; each costs a wake-up of the sleeping threads under the passive wait policy (about
#: 0.12-0.2 ms on a quiet 2-vCPU VM, measured: a (32, 42) x (42, 80) product at 2 threads
#: took 117 us PASSIVE, 5 us spinning, 4 us on one thread). Measured crossovers of the
#: stack-LSTM forward + backward at 2 threads against 1 (benchmarks/, section e):
#: spinning threads pay from about 0.5M multiply-adds per step, sleeping ones from about
#: 9M. On a loaded machine spinning threads lose at every size.
SERIAL_STEP_WORK = (1 << 23) if _passive_wait() else (1 << 19)


def gate_work(batch_size: int, weight_ih: torch.Tensor, hidden: int) -> int:
    """Multiply-adds of one step's gate product of a recurrent cell: ``batch x gate rows x
    (inputs + hidden)`` for input weights ``weight_ih`` (gate rows, inputs)."""
    return batch_size * weight_ih.shape[0] * (weight_ih.shape[1] + hidden)


class StepLoop:
    """What :func:`step_threads` yields: marks a step loop's inputs and outputs so that
    autograd runs the loop's backward on one thread as well (it runs after the ``with``
    block has ended, so the block's own thread count cannot cover it).

    ``loop.outputs(t)`` registers a hook on ``t`` (e.g. the stacked states), which runs
    when the backward reaches the loop: it sets one torch thread and queues the restore of
    the count at the end of the backward pass. ``loop.inputs(t)`` registers a hook on ``t``
    (e.g. the projected inputs), which runs once the loop's backward has delivered all of
    ``t``'s gradient: it restores the count there, so the work upstream of the loop runs
    on the configured threads. Both return ``t`` and do nothing without grad, for a
    tensor that needs none, for large steps or off the CPU."""

    __slots__ = ("active",)

    def __init__(self, active: bool):
        self.active = active

    def _hook(self, t, fn):
        if self.active and torch.is_grad_enabled() and isinstance(t, torch.Tensor) \
                and t.requires_grad:
            t.register_hook(fn)
        return t

    def outputs(self, t: torch.Tensor) -> torch.Tensor:
        """``t``, whose gradient starts the loop's backward on one thread."""
        return self._hook(t, _begin_serial_backward)

    def inputs(self, t: torch.Tensor) -> torch.Tensor:
        """``t``, whose complete gradient ends the loop's backward on one thread."""
        return self._hook(t, _end_serial_backward)


#: the configured thread count while a backward runs a step loop on one thread (empty:
#: none does); restored by the loop's input hook or at the end of the backward pass
_BACKWARD_SAVED: list[int] = []


def _in_backward() -> bool:
    task = getattr(torch._C, "_current_graph_task_id", None)
    return task is None or task() != -1


def _begin_serial_backward(grad):
    n = torch.get_num_threads()
    if n > 1 and not _BACKWARD_SAVED:
        _BACKWARD_SAVED.append(n)
        torch.set_num_threads(1)
        torch.autograd.Variable._execution_engine.queue_callback(_end_serial_backward)
    return None


def _end_serial_backward(*_):
    if _BACKWARD_SAVED:
        torch.set_num_threads(_BACKWARD_SAVED.pop())
    return None


def _restore_stale() -> None:
    """A backward that raised between the two hooks skips its queued restore: the next
    step loop outside a backward puts the configured count back, unless the count was
    set to something else meanwhile (then that choice stands)."""
    if _BACKWARD_SAVED and not _in_backward():
        n = _BACKWARD_SAVED.pop()
        if torch.get_num_threads() == 1:  # still the count the backward set
            torch.set_num_threads(n)


@contextmanager
def step_threads(work: int | None, device):
    """Run the block on one torch thread when it is a step loop on the CPU whose per-step
    ``work`` is below :data:`SERIAL_STEP_WORK`; otherwise (also for ``work`` None: not
    counted) leave the thread count alone. Yields a :class:`StepLoop`, whose ``inputs``
    and ``outputs`` extend the rule to the loop's backward.
    The count is restored on leaving (also on an exception). Small step loops run the
    same, or faster, on one thread under either wait policy and any load, and their
    results no longer depend on the configured thread count. The count is torch's
    (process-wide for its BLAS): work that another Python thread runs meanwhile runs on one
    thread too, and a count that thread sets meanwhile is overwritten on leaving."""
    _restore_stale()
    small = (work is not None and work < SERIAL_STEP_WORK
             and torch.device(device).type == "cpu")
    n = torch.get_num_threads()
    if n == 1 or not small:
        yield StepLoop(small)
        return
    torch.set_num_threads(1)
    try:
        yield StepLoop(True)
    finally:
        torch.set_num_threads(n)
