r"""Differentiable stacks with explicit state.

Two continuous relaxations of a pushdown stack, each a small :class:`torch.nn.Module` that
holds only the *interface* layers (the maps from the controller's hidden state :math:`h_t`
to the stack actions and the pushed value). The stack contents are never stored on the
module: every operation takes the state and returns a new one, so a recurrent model can
carry, detach (truncated BPTT) or record it freely.

* :class:`SuperpositionStack`: Joulin & Mikolov (2015), "Inferring Algorithmic Patterns with
  Stack-Augmented Recurrent Nets", NeurIPS (arXiv:1503.01007). Every cell is a convex
  combination of the results of push, pop and no-op.
* :class:`StratificationStack`: Grefenstette, Hermann, Suleyman & Blunsom (2015), "Learning
  to Transduce with Unbounded Memory", NeurIPS (arXiv:1506.02516). Elements carry a
  strength in :math:`[0, 1]`; pop removes strength from the top down, read mixes the
  topmost unit of strength.

Both are vectorised over batch, stacks *and* depth (no Python loop over depth): the
superposition update is three shifted copies of the stack, the stratification update uses
an exclusive cumulative sum over depth. Each keeps a loop-based ``_reference_step`` with the
same signature as ``step``; the tests compare the two.

Conventions: ``B`` batch, ``K`` number of independent stacks, ``D`` depth (capacity), ``W``
width of an element. Index 0 along depth is the **top** of the stack; the last index is the
bottom. Empty cells hold zeros (and, for stratification, zero strength).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.autograd import forward_ad as _forward_ad

from ..errors import InvalidParameterError, ShapeError
from . import _native

__all__ = [
    "SuperpositionStack",
    "SuperpositionControls",
    "StratificationStack",
    "StratificationControls",
    "StratificationState",
    "STACKS",
]


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    from ..limits import check_count, check_memory

    check_count(value, name, minimum=minimum)
    check_memory(64 * value, f"{name}={value}")
    return value


def _check_shape(name: str, t: torch.Tensor, shape: tuple) -> None:
    if not isinstance(t, torch.Tensor):
        raise ShapeError(f"{name} must be a tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ShapeError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def _grown_depth(d: int, grow: int | None) -> int:
    """Depth after one step of a stack stored ``d`` cells deep that grows by one cell per
    step up to ``grow`` (``None``: a fixed depth); see ``SuperpositionStack.grow_step``."""
    return d if grow is None else min(d + 1, max(d, grow))


def _compiling() -> bool:
    """Whether ``torch.compile`` is tracing (the fused Functions are not traced)."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return compiling is not None and compiling()


def _forward_ad_active() -> bool:
    """Whether a forward-mode AD level is open (a Function without ``jvp`` would raise)."""
    return getattr(_forward_ad, "_current_level", -1) >= 0


def _plain_form_grads(fn, ins, cotangents, needs) -> list:
    """The gradients of ``fn(*ins)`` (a tuple of outputs, plain differentiable operations)
    against ``cotangents`` (``None`` entries skipped), for the inputs that ``needs`` and
    that require grad (others ``None``); differentiable themselves when grad mode is on.
    What the hand-written backwards here fall back to for a double backward."""
    want = [i for i, t in enumerate(ins) if needs[i] and t is not None and t.requires_grad]
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        leaves = [t if t is None or t.requires_grad else t.detach() for t in ins]
        pairs = [(o, g) for o, g in zip(fn(*leaves), cotangents) if g is not None]
        got = torch.autograd.grad([o for o, _ in pairs], [leaves[i] for i in want],
                                  [g for _, g in pairs], create_graph=create,
                                  allow_unused=True) if want and pairs else ()
    res = [None] * len(ins)
    for i, gi in zip(want, got):
        res[i] = gi
    return res


class _InterfacedStack(nn.Module):
    """What both stacks share: the optional interface layers from the controller state
    :math:`h_t` (``action``: :attr:`n_actions` logits per stack; ``value``: ``W`` per stack),
    the one-step :meth:`forward` and the choice of an initial state's depth. Subclasses set
    ``n_stacks`` and ``width`` before calling :meth:`_build_interface`, and define ``step``,
    ``read`` and ``controls``."""

    n_actions: int

    def _build_interface(self, hidden_size: int | None, dtype, device) -> None:
        self.hidden_size = hidden_size
        if hidden_size is not None:
            _positive_int("hidden_size", hidden_size)
            fk = {"dtype": dtype, "device": device}
            self.action = nn.Linear(hidden_size, self.n_actions * self.n_stacks, **fk)
            self.value = nn.Linear(hidden_size, self.width * self.n_stacks, **fk)

    @staticmethod
    def _state_depth(name: str, depth: int | None, default: int | None) -> int:
        """The depth of an initial state: ``depth``, else the module's ``default`` (one of
        them is needed)."""
        D = depth if depth is not None else default
        if D is None:
            raise InvalidParameterError(f"{name} is needed: the stack was built without one, "
                                        "so pass it to initial_state")
        return _positive_int(name, D)

    def _require_interface(self) -> None:
        if self.hidden_size is None:
            raise InvalidParameterError("this stack was built without hidden_size: "
                                        "it has no interface layers")

    def _check_hidden(self, h: torch.Tensor) -> None:
        self._require_interface()
        if h.dim() != 2 or h.shape[-1] != self.hidden_size:
            raise ShapeError(f"h must be (B, {self.hidden_size}), got {tuple(h.shape)}")

    def merged_interface(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)``: the action and value layers side by side, ``W`` (H, aK + KW)
        transposed (``a`` = :attr:`n_actions`), so that a model computes both with one
        product per step (``controls_from_logits`` of ``h @ W + b`` equals ``controls`` of
        ``h``)."""
        self._require_interface()
        return (torch.cat([self.action.weight, self.value.weight]).T,
                torch.cat([self.action.bias, self.value.bias]))

    def forward(self, h: torch.Tensor, state):
        """``(read, new_state)`` after one step driven by the controller state ``h``."""
        new = self.step(state, self.controls(h))
        return self.read(new), new


# ---------------------------------------------------------------------------------------
# Superposition stack (Joulin & Mikolov 2015)
# ---------------------------------------------------------------------------------------
#: how a superposition stack normalises its action logits
ACTION_SOFTMAX = ("per_stack", "joint")


class SuperpositionControls(NamedTuple):
    """Controls of one superposition-stack step.

    actions : (B, K, 3)  probabilities of (push, pop, no-op), rows summing to one (with
              ``action_softmax="joint"``: all ``3K`` entries together summing to one)
    values  : (B, K, W)  the vector pushed (with weight ``actions[..., 0]``)
    """

    actions: torch.Tensor
    values: torch.Tensor


PUSH, POP, NOOP = 0, 1, 2


def _superposition_composed(state: torch.Tensor, actions: torch.Tensor, values: torch.Tensor,
                            new_depth: int) -> torch.Tensor:
    """The superposition update written with plain differentiable operations.

    ``state`` (B, K, d, W) -> (B, K, new_depth, W), ``new_depth`` in ``{d, d + 1}`` (the
    state padded with one empty cell at the bottom before the update when it grows).
    """
    B, K, d, W = state.shape
    if new_depth > d:
        state = torch.cat([state, state.new_zeros(B, K, new_depth - d, W)], dim=2)
    a = actions.unsqueeze(-1).unsqueeze(-1)  # (B, K, 3, 1, 1)
    pushed = torch.cat([values.unsqueeze(-2), state[:, :, :-1]], dim=2)  # bottom dropped
    popped = torch.cat([state[:, :, 1:], torch.zeros_like(state[:, :, :1])], dim=2)
    return a[:, :, PUSH] * pushed + a[:, :, POP] * popped + a[:, :, NOOP] * state


def _native_ok(*ts) -> bool:
    """Whether the compiled superposition kernels (:mod:`rnnmem.models._native`) can run:
    plain real float32/float64 CPU tensors of one dtype, and a C compiler was found."""
    return ts[0].dtype in (torch.float32, torch.float64) and _native.supports(*ts)


def _superposition_forward(state, actions, values, new_depth):
    """The update of :func:`_superposition_composed` written into one fresh tensor: the
    push term, then the pop and no-op terms added in place (same order of the sums);
    three passes over the state and no intermediate (B, K, d, W) tensors. On CPU with
    the compiled kernels: the same sums in the same order, in one pass."""
    if _native_ok(state, actions, values):
        return _native.superposition_forward(state, actions, values, new_depth)
    B, K, d, W = state.shape
    nd = new_depth  # d + 1 at most; below d, the top nd cells alone (lstm_sequence._depths)
    a = actions.unsqueeze(-1).unsqueeze(-1)  # (B, K, 3, 1, 1)
    ap, ao, an = a[:, :, PUSH], a[:, :, POP], a[:, :, NOOP]  # (B, K, 1, 1)
    out = state.new_empty(B, K, nd, W)
    torch.mul(values.unsqueeze(2), ap, out=out[:, :, :1])  # push: v on top
    if nd > 1:
        torch.mul(state[:, :, :nd - 1], ap, out=out[:, :, 1:])  # push: s shifted down
    p, m = min(d - 1, nd), min(d, nd)
    if p > 0:
        out[:, :, :p].addcmul_(state[:, :, 1:p + 1], ao)  # pop: s shifted up
    out[:, :, :m].addcmul_(state[:, :, :m], an)  # no-op (a grown bottom cell gets nothing)
    return out


def _dot_cells(x, y):
    """Per (b, k) dot product of two (B, K, n, W) tensors over (n, W) -> (B, K)."""
    B, K = x.shape[:2]
    if x.shape[2] == 0:
        return x.new_zeros(B, K)
    # einsum contracts by a batched product without a (B, K, n, W) temporary (measured
    # 5x faster than vecdot / mul-sum at B=32, depth 250, width 8, one thread)
    return torch.einsum("bknw,bknw->bk", x, y)


class _SuperpositionUpdate(torch.autograd.Function):
    r"""The superposition update with a hand-written backward that keeps only the previous
    state (which the previous step produced anyway), not the three shifted copies and
    products that plain operations save. With :math:`g = \partial L/\partial s_t`:

    .. math::

        \partial_{s_{t-1}[j]} L &= a^{\mathrm{noop}} g[j] + a^{\mathrm{push}} g[j+1]
            + a^{\mathrm{pop}} g[j-1], \qquad
        \partial_v L = a^{\mathrm{push}} g[0], \\
        \partial_{a^{\mathrm{push}}} L &= \langle g[0], v\rangle
            + \langle g[1{:}], s_{t-1}[{:}D'-1]\rangle, \quad
        \partial_{a^{\mathrm{pop}}} L = \langle g[{:}d-1], s_{t-1}[1{:}]\rangle, \quad
        \partial_{a^{\mathrm{noop}}} L = \langle g[{:}d], s_{t-1}\rangle .

    Under ``create_graph=True`` the backward is recomputed through
    :func:`_superposition_composed` (so double backward works as before).
    """

    @staticmethod
    def forward(ctx, state, actions, values, new_depth):
        ctx.save_for_backward(state, actions, values)
        ctx.save_for_forward(state, actions, values)
        ctx.new_depth = new_depth
        return _superposition_forward(state, actions, values, new_depth)

    @staticmethod
    def jvp(ctx, t_state, t_actions, t_values, _):
        """Forward mode: the update F(s, a, v) is bilinear in a and (s, v), so its tangent
        is F(ds, a, dv) + F(s, da, v)."""
        state, actions, values = ctx.saved_tensors
        nd = ctx.new_depth
        out = None
        # the plain form: jvp runs with grad mode on, where the out= products of the torch
        # form of _superposition_forward refuse inputs that require grad
        if t_state is not None or t_values is not None:
            out = _superposition_composed(
                torch.zeros_like(state) if t_state is None else t_state, actions,
                torch.zeros_like(values) if t_values is None else t_values, nd)
        if t_actions is not None:
            da = _superposition_composed(state, t_actions, values, nd)
            out = da if out is None else out + da
        return torch.zeros(state.shape[:2] + (nd,) + state.shape[3:], dtype=state.dtype,
                           device=state.device) if out is None else out

    @staticmethod
    def backward(ctx, g):
        state, actions, values = ctx.saved_tensors
        nd = ctx.new_depth
        if torch.is_grad_enabled():  # double backward: differentiate the plain form
            grads = _plain_form_grads(
                lambda s, a, v: (_superposition_composed(s, a, v, nd),),
                (state, actions, values), (g,), ctx.needs_input_grad)
            return (*grads, None)
        gs, ga, gv = _superposition_backward(state, actions, values, g)
        return (gs if ctx.needs_input_grad[0] else None,
                ga if ctx.needs_input_grad[1] else None,
                gv if ctx.needs_input_grad[2] else None, None)


def _superposition_backward(state, actions, values, g, g_read=None):
    """``(dL/dstate, dL/dactions, dL/dvalues)`` of the update from ``g = dL/dout``
    (B, K, nd, W), plus ``g_read`` (B, K, r, W), the gradient of a read of the output's
    top ``r`` cells, when given (the formulas of :class:`_SuperpositionUpdate`). One pass
    of the compiled kernel where it runs, else torch operations."""
    g = g.contiguous()
    if _native_ok(state, actions, values, g):  # one pass, all three gradients
        return _native.superposition_backward(
            state, actions, values, g, None if g_read is None else g_read.contiguous())
    if g_read is not None:
        g = g.clone()
        g[:, :, :g_read.shape[2]] += g_read
    B, K, d, W = state.shape
    nd = g.shape[2]  # d + 1 at most; below d, an update that kept the top nd cells alone
    p, m = min(d - 1, nd), min(d, nd)
    a = actions.unsqueeze(-1).unsqueeze(-1)  # (B, K, 3, 1, 1)
    ap, ao, an = a[:, :, PUSH], a[:, :, POP], a[:, :, NOOP]
    if m == d:
        gs = torch.mul(g[:, :, :d], an)  # (B, K, d, W)
    else:  # the cells below the kept ones reach nothing
        gs = state.new_zeros(B, K, d, W)
        torch.mul(g[:, :, :m], an, out=gs[:, :, :m])
    if nd > 1:
        gs[:, :, :nd - 1].addcmul_(g[:, :, 1:nd], ap)
    if p > 0:
        gs[:, :, 1:p + 1].addcmul_(g[:, :, :p], ao)
    ga = torch.stack([
        (g[:, :, 0] * values).sum(-1) + _dot_cells(g[:, :, 1:nd], state[:, :, :nd - 1]),
        _dot_cells(g[:, :, :max(p, 0)], state[:, :, 1:max(p, 0) + 1]),
        _dot_cells(g[:, :, :m], state[:, :, :m])], dim=-1)  # (B, K, 3), PUSH/POP/NOOP
    gv = g[:, :, 0] * ap[:, :, 0]  # (B, K, W)
    return gs, ga, gv


class _SuperpositionUpdateRead(torch.autograd.Function):
    """The update and a read of its top ``r`` cells, ``(new_state, read (B, K, r, W))``,
    as ONE node: the read's gradient is added to the state gradient's top rows inside the
    compiled backward. Reading the top cells with a slice instead makes autograd build a
    zero tensor of the whole state for the slice's gradient and add it to the update's,
    every step (measured: more time than the update itself at T = 500). Used only where
    the compiled kernels run (:func:`_native_ok`); other paths slice."""

    @staticmethod
    def forward(ctx, state, actions, values, new_depth, r):
        ctx.save_for_backward(state, actions, values)
        ctx.new_depth, ctx.r = new_depth, r
        ctx.set_materialize_grads(False)
        out = _superposition_forward(state, actions, values, new_depth)
        return out, out[:, :, :r].clone()

    @staticmethod
    def backward(ctx, g, g_read):
        state, actions, values = ctx.saved_tensors
        nd, r = ctx.new_depth, ctx.r
        if g is None and g_read is None:
            return None, None, None, None, None
        if g is None:  # only the read is used (the last step): the state gradient is 0
            g = state.new_zeros(state.shape[:2] + (nd,) + state.shape[3:])
        if torch.is_grad_enabled():  # double backward: differentiate the plain form

            def update_and_top(s, a, v):
                out = _superposition_composed(s, a, v, nd)
                return out, out[:, :, :r]

            grads = _plain_form_grads(update_and_top, (state, actions, values), (g, g_read),
                                      ctx.needs_input_grad)
            return (*grads, None, None)
        gs, ga, gv = _superposition_backward(state, actions, values, g, g_read)
        return (gs if ctx.needs_input_grad[0] else None,
                ga if ctx.needs_input_grad[1] else None,
                gv if ctx.needs_input_grad[2] else None, None, None)


def _plain_autograd(*ts) -> bool:
    """Whether the fused Function may run: no :mod:`torch.func` wrappers (vmap, grad) and
    no tensor subclasses, which its in-place backward does not support."""
    return all(type(t) is torch.Tensor
               and not torch._C._functorch.is_functorch_wrapped_tensor(t) for t in ts)


def _superposition_update(state, actions, values, new_depth):
    """The superposition update (see :func:`_superposition_composed`).

    Plain tensors go through :class:`_SuperpositionUpdate` (one fresh output, three
    in-place passes forward, previous state only saved for backward); under ``torch.func``
    transforms, for tensor subclasses and while ``torch.compile`` traces, the plain
    operations of :func:`_superposition_composed` are used (they have ``vmap`` rules and
    trace). Both are tested against ``_reference_step``.

    History (measured on the project CPU, ``benchmarks/bench_stacks.py``): an earlier
    fused Function (addcmul_/bmm, more Python per step) was measured at par with the plain
    form (~1.0 ms per growing step at batch 32, width 8, depth <= 500, one thread) and
    dropped. The form here saves no per-step copies for backward: at T = 500 the plain
    form keeps three shifted (B, K, d, W) copies and three products per step alive until
    backward (O(T^2) fresh memory, page-faulted), this one none.

    On CPU, for real float32/float64 tensors, its forward and backward run the compiled
    kernels of :mod:`rnnmem.models._native` (``superposition.c``: one pass each, the
    gradient inner products fused with ``dL/dstate``) when a C compiler is found, else the
    torch operations above. For float32 the kernels compute in double and round each
    output cell to float32 once (the state stays float32; float16/bfloat16 use the torch
    form): the deep cells of a long stack are float32 subnormals, whose float arithmetic
    takes the CPU's slow path, and in double it does not (all-subnormal state, depth 500:
    1.85 ms forward in float, 0.09 ms in double). Measured (``benchmarks``, stack-LSTM
    fwd+bwd, T = 500, batch 32, hidden 20, width 8, 2 threads; the step-by-step graph):
    2.8-3.6x the plain LSTM of the same loop with the kernels, 4.2-5.2x with the torch
    form, 4.4-7.5x with plain operations. A whole sequence of an LSTM controller skips
    this Function altogether (:mod:`rnnmem.models.lstm_sequence`).
    """
    if _compiling() or not _plain_autograd(state, actions, values):
        return _superposition_composed(state, actions, values, new_depth)
    if torch.is_grad_enabled() and (state.requires_grad or actions.requires_grad
                                    or values.requires_grad):
        return _SuperpositionUpdate.apply(state, actions, values, new_depth)
    return _superposition_forward(state, actions, values, new_depth)


class SuperpositionStack(_InterfacedStack):
    r"""Superposition stack of Joulin & Mikolov (2015), depth-limited, ``K`` stacks.

    With actions :math:`a_t = \mathrm{softmax}(A h_t) \in \Delta^2` (push, pop, no-op) and the
    pushed value :math:`v_t = \sigma(D h_t) \in (0, 1)^W`, each stack :math:`s \in
    \mathbb{R}^{\mathrm{depth} \times W}` (row 0 = top) is updated as

    .. math::

        s_t = a^{\mathrm{push}}_t \begin{bmatrix} v_t \\ s_{t-1}[0{:}D-1] \end{bmatrix}
            + a^{\mathrm{pop}}_t \begin{bmatrix} s_{t-1}[1{:}D] \\ 0 \end{bmatrix}
            + a^{\mathrm{noop}}_t\, s_{t-1},

    i.e. Joulin & Mikolov's stack update (push and pop, plus the no-op action they also
    consider) with a fixed depth :math:`D`: a push drops the bottom cell, a pop shifts a
    zero in at the bottom.
    With one-hot actions this is exactly a discrete stack of capacity :math:`D`. The read
    is the top ``read_depth`` cells, flattened: :math:`r_t = \mathrm{vec}(s_t[0{:}k])`
    (their :math:`P s_{t-1}[0{:}k]` term).

    Parameters
    ----------
    depth : int or None
        Number of cells per stack (the depth limit). ``None``: chosen per state, in
        :meth:`initial_state` (a model passes the sequence length); :meth:`step` accepts
        any depth :math:`\ge` ``read_depth``.
    width : int
        Size :math:`W` of each cell.
    read_depth : int
        Number of top cells read, :math:`1 \le k \le` ``depth``.
    n_stacks : int
        Number :math:`K` of independent stacks driven by the same controller.
    hidden_size : int, optional
        Size of the controller state :math:`h_t`. When given, the module owns the interface
        layers ``action`` (:math:`A`, to ``3 K`` logits) and ``value`` (:math:`D`, to
        ``K W``); without it the module is parameter-free and only :meth:`step` /
        :meth:`read` are usable.
    action_softmax : {"per_stack", "joint"}
        ``"per_stack"`` (default): each stack's three action logits go through their own
        softmax. ``"joint"``: one softmax over all :math:`3K` logits, as in DeepMind's
        ``StackRNNCore`` (google-deepmind/neural_networks_chomsky_hierarchy,
        ``models/stack_rnn.py``: ``softmax(Linear(3K)(h))`` before the reshape to
        ``(K, 3)``), so that each stack's actions sum to its share of one.
    dtype, device : optional
        Factory arguments of the interface layers.
    """

    kind = "superposition"
    n_actions = 3  # push, pop, no-op

    def __init__(self, depth: int | None, width: int, read_depth: int = 1, *,
                 n_stacks: int = 1, hidden_size: int | None = None,
                 action_softmax: str = "per_stack", dtype=None, device=None):
        super().__init__()
        if action_softmax not in ACTION_SOFTMAX:
            raise InvalidParameterError(f"action_softmax must be one of {ACTION_SOFTMAX}, "
                                        f"got {action_softmax!r}")
        self.action_softmax = action_softmax
        self.depth = None if depth is None else _positive_int("depth", depth)
        self.width = _positive_int("width", width)
        self.read_depth = _positive_int("read_depth", read_depth)
        self.n_stacks = _positive_int("n_stacks", n_stacks)
        if self.depth is not None and self.read_depth > self.depth:
            raise InvalidParameterError(
                f"read_depth ({read_depth}) must not exceed depth ({depth})")
        self._build_interface(hidden_size, dtype, device)

    @property
    def read_size(self) -> int:
        """Length of :meth:`read`'s output, ``K * read_depth * W``."""
        return self.n_stacks * self.read_depth * self.width

    def initial_state(self, batch_size: int, *, depth: int | None = None, dtype=None,
                      device=None) -> torch.Tensor:
        """An empty stack, zeros of shape ``(B, K, depth, W)`` (``depth`` defaults to the
        module's)."""
        _positive_int("batch_size", batch_size)
        D = self._state_depth("depth", depth, self.depth)
        if D < self.read_depth:
            raise InvalidParameterError(f"depth ({D}) must not be smaller than read_depth "
                                        f"({self.read_depth})")
        return torch.zeros(batch_size, self.n_stacks, D, self.width, dtype=dtype, device=device)

    def controls(self, h: torch.Tensor) -> SuperpositionControls:
        r"""Actions :math:`\mathrm{softmax}(A h)` and value :math:`\sigma(D h)` from ``h`` (B, H)."""
        self._check_hidden(h)
        B = h.shape[0]
        actions = self._actions(self.action(h))  # (B, K, 3)
        values = torch.sigmoid(self.value(h)).view(B, self.n_stacks, self.width)  # (B, K, W)
        return SuperpositionControls(actions, values)

    def _actions(self, logits: torch.Tensor) -> torch.Tensor:
        """Action probabilities (B, K, 3) from logits (B, 3K) (see ``action_softmax``)."""
        B = logits.shape[0]
        if self.action_softmax == "joint":
            return torch.softmax(logits, dim=-1).view(B, self.n_stacks, 3)
        return torch.softmax(logits.view(B, self.n_stacks, 3), dim=-1)

    def controls_from_logits(self, z: torch.Tensor) -> SuperpositionControls:
        """Controls from the merged logits ``z`` (B, 3K + KW) (see :meth:`merged_interface`)."""
        B, n = z.shape[0], 3 * self.n_stacks
        return SuperpositionControls(self._actions(z[:, :n]),
                                     torch.sigmoid(z[:, n:]).view(B, self.n_stacks, self.width))

    def _check(self, state: torch.Tensor, controls: SuperpositionControls) -> None:
        if not isinstance(state, torch.Tensor) or state.dim() != 4:
            raise ShapeError(f"state must be (B, K, D, W), got "
                             f"{tuple(getattr(state, 'shape', ()))}")
        B, K, D, W = state.shape
        _check_shape("state", state, (B, self.n_stacks, D, self.width))
        if D < self.read_depth:
            raise ShapeError(f"state depth {D} is smaller than read_depth {self.read_depth}")
        _check_shape("actions", controls.actions, (B, self.n_stacks, 3))
        _check_shape("values", controls.values, (B, self.n_stacks, self.width))

    def step(self, state: torch.Tensor, controls: SuperpositionControls) -> torch.Tensor:
        """One update of every stack (vectorised over batch, stacks and depth).

        Parameters
        ----------
        state : tensor (B, K, D, W)
        controls : :class:`SuperpositionControls`

        Returns
        -------
        new_state : tensor (B, K, D, W)
        """
        self._check(state, controls)
        # push: [v; s[:D-1]] (bottom dropped); pop: [s[1:]; 0]; no-op: s (one fused op)
        return _superposition_update(state, controls.actions, controls.values,
                                     state.shape[2])

    def grow_step(self, state: torch.Tensor, controls: SuperpositionControls,
                  limit: int) -> torch.Tensor:
        r""":meth:`step` on a stack stored only down to its deepest possibly non-empty cell.

        A stack that started empty has, after :math:`t` steps, nothing below cell
        :math:`t` (each step moves contents by at most one cell), so a model may store it
        with depth :math:`d \le` ``limit`` and let it grow: the result has depth
        :math:`\min(d + 1, \text{limit})` and equals :meth:`step` on the state padded with
        empty cells to depth ``limit``, cut to that depth (the cells below are exactly
        zero). The work per step is then proportional to :math:`d`, not to ``limit``.
        """
        self._check(state, controls)
        d = state.shape[2]
        return _superposition_update(state, controls.actions, controls.values,
                                     _grown_depth(d, limit))

    def step_read(self, state: torch.Tensor, controls: SuperpositionControls,
                  grow: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(new_state, read(new_state))``: :meth:`step` (or :meth:`grow_step` up to
        ``grow``) and :meth:`read` of its result, the same values; with the compiled
        kernels one autograd node (the read's gradient joins the state's in the kernel)."""
        self._check(state, controls)
        d = state.shape[2]
        nd = _grown_depth(d, grow)
        B = state.shape[0]
        a, v = controls.actions, controls.values
        if (torch.is_grad_enabled() and (state.requires_grad or a.requires_grad
                                         or v.requires_grad)
                and nd >= self.read_depth and _native_ok(state, a, v)
                and not _forward_ad_active()):  # the node has no jvp
            new, top = _SuperpositionUpdateRead.apply(state, a, v, nd, self.read_depth)
            return new, top.reshape(B, self.read_size)
        new = _superposition_update(state, a, v, nd)
        return new, self.read(new)

    def pad(self, state: torch.Tensor, depth: int) -> torch.Tensor:
        """``state`` with empty cells appended at the bottom up to ``depth``."""
        B, K, d, W = state.shape
        if d >= depth:
            return state
        return torch.cat([state, state.new_zeros(B, K, depth - d, W)], dim=2)

    def _reference_step(self, state: torch.Tensor,
                        controls: SuperpositionControls) -> torch.Tensor:
        """Loop-over-everything version of :meth:`step` (the slow reference)."""
        self._check(state, controls)
        B, K, D, W = state.shape
        zero = torch.zeros(W, dtype=state.dtype, device=state.device)
        out_b = []
        for b in range(B):
            out_k = []
            for k in range(K):
                push, pop, noop = (controls.actions[b, k, i] for i in range(3))
                cells = []
                for d in range(D):
                    above = controls.values[b, k] if d == 0 else state[b, k, d - 1]
                    below = state[b, k, d + 1] if d + 1 < D else zero
                    cells.append(push * above + pop * below + noop * state[b, k, d])
                out_k.append(torch.stack(cells))
            out_b.append(torch.stack(out_k))
        return torch.stack(out_b)

    def read(self, state: torch.Tensor) -> torch.Tensor:
        """The top ``read_depth`` cells of every stack, flattened: ``(B, K * read_depth * W)``."""
        B = state.shape[0]
        return state[:, :, : self.read_depth].reshape(B, self.read_size)

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, width={self.width}, read_depth={self.read_depth}, "
                f"n_stacks={self.n_stacks}, action_softmax={self.action_softmax}")


# ---------------------------------------------------------------------------------------
# Stratification stack (Grefenstette et al. 2015)
# ---------------------------------------------------------------------------------------
class StratificationControls(NamedTuple):
    """Controls of one stratification-stack step.

    push  : (B, K)     push strength :math:`d_t \\in [0, 1]`
    pop   : (B, K)     pop strength :math:`u_t \\in [0, 1]`
    value : (B, K, W)  the vector pushed
    """

    push: torch.Tensor
    pop: torch.Tensor
    value: torch.Tensor


class StratificationState(NamedTuple):
    """State of ``K`` stratification stacks with capacity ``M`` (index 0 = top).

    values    : (B, K, M, W)
    strengths : (B, K, M)
    """

    values: torch.Tensor
    strengths: torch.Tensor


def _exclusive_cumsum(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """:math:`y_p = \\sum_{q < p} x_q` along ``dim`` (the strength lying above cell ``p``)."""
    return torch.cumsum(x, dim=dim) - x


class StratificationStack(_InterfacedStack):
    r"""Neural stack of Grefenstette et al. (2015) in a fixed-capacity buffer.

    The stack holds values :math:`V_i` with strengths :math:`s_i \in [0, 1]`. One step with
    push strength :math:`d_t = \sigma(\cdot)`, pop strength :math:`u_t = \sigma(\cdot)` and
    value :math:`v_t = \tanh(\cdot)` (their neural-stack equations, indices counted from the bottom):

    .. math::

        s_t[i] &= \mathrm{relu}\Big(s_{t-1}[i] - \mathrm{relu}\big(u_t -
                  \textstyle\sum_{j=i+1}^{t-1} s_{t-1}[j]\big)\Big), \quad i < t, \\
        s_t[t] &= d_t, \qquad V_t[t] = v_t, \\
        r_t &= \textstyle\sum_{i=1}^{t} \min\Big(s_t[i], \mathrm{relu}\big(1 -
               \sum_{j=i+1}^{t} s_t[j]\big)\Big) V_t[i].

    (pop first, then push, then read). Here the buffer is stored top-first, so
    ":math:`\sum_{j > i}`" (the strength above cell :math:`i`) is an exclusive cumulative
    sum over depth, and the whole step is vectorised over batch, stacks and depth.

    **Capacity.** The paper's stack grows by one element per step (every step pushes, if
    only with strength :math:`d_t = 0`). This implementation keeps ``max_depth`` cells: each
    step shifts every cell one place down and the **bottom (oldest) cell is dropped**,
    together with its strength. With ``max_depth`` at least the number of steps taken
    nothing is ever dropped and the result is exactly the unbounded stack of the paper;
    with ``max_depth = M`` smaller, the stack is the paper's stack over the elements pushed
    in the last :math:`M` steps (the capacity is a window of steps, not a count of live
    elements; the deepest memory is forgotten first).
    Strengths stay in :math:`[0, 1]` (given :math:`d_t \in [0, 1]`) and the read weights
    are non-negative with sum :math:`\le 1`.

    Parameters
    ----------
    width : int
        Size :math:`W` of a stack element.
    max_depth : int, optional
        Capacity ``M``; when ``None`` it must be given to :meth:`initial_state` (a model
        passes the sequence length).
    n_stacks : int
        Number :math:`K` of independent stacks.
    hidden_size : int, optional
        Controller size; when given the module owns ``action`` (to ``2 K`` logits: push and
        pop strengths through a sigmoid) and ``value`` (to ``K W``, through tanh).
    dtype, device : optional
        Factory arguments of the interface layers.
    """

    kind = "stratification"
    n_actions = 2  # push and pop strengths

    def __init__(self, width: int, max_depth: int | None = None, *, n_stacks: int = 1,
                 hidden_size: int | None = None, dtype=None, device=None):
        super().__init__()
        self.width = _positive_int("width", width)
        self.max_depth = None if max_depth is None else _positive_int("max_depth", max_depth)
        self.n_stacks = _positive_int("n_stacks", n_stacks)
        self.read_depth = 1
        self._build_interface(hidden_size, dtype, device)

    @property
    def read_size(self) -> int:
        """Length of :meth:`read`'s output, ``K * W``."""
        return self.n_stacks * self.width

    def initial_state(self, batch_size: int, *, max_depth: int | None = None, dtype=None,
                      device=None) -> StratificationState:
        """An empty stack: zero values ``(B, K, M, W)`` and zero strengths ``(B, K, M)``."""
        _positive_int("batch_size", batch_size)
        M = self._state_depth("max_depth", max_depth, self.max_depth)
        fk = {"dtype": dtype, "device": device}
        return StratificationState(
            torch.zeros(batch_size, self.n_stacks, M, self.width, **fk),
            torch.zeros(batch_size, self.n_stacks, M, **fk))

    def controls(self, h: torch.Tensor) -> StratificationControls:
        r""":math:`d = \sigma(\cdot)`, :math:`u = \sigma(\cdot)`, :math:`v = \tanh(\cdot)` from ``h``."""
        self._check_hidden(h)
        B = h.shape[0]
        du = torch.sigmoid(self.action(h)).view(B, self.n_stacks, 2)  # (B, K, 2)
        v = torch.tanh(self.value(h)).view(B, self.n_stacks, self.width)  # (B, K, W)
        return StratificationControls(du[..., 0], du[..., 1], v)

    def controls_from_logits(self, z: torch.Tensor) -> StratificationControls:
        """Controls from the merged logits ``z`` (B, 2K + KW) (see :meth:`merged_interface`)."""
        B, n = z.shape[0], 2 * self.n_stacks
        du = torch.sigmoid(z[:, :n]).view(B, self.n_stacks, 2)  # (B, K, 2)
        v = torch.tanh(z[:, n:]).view(B, self.n_stacks, self.width)  # (B, K, W)
        return StratificationControls(du[..., 0], du[..., 1], v)

    def _check(self, state: StratificationState, controls: StratificationControls) -> None:
        V, s = state
        if not isinstance(V, torch.Tensor) or V.dim() != 4:
            raise ShapeError(f"state.values must be (B, K, M, W), got "
                             f"{tuple(getattr(V, 'shape', ()))}")
        B, K, M, W = V.shape
        _check_shape("state.values", V, (B, self.n_stacks, M, self.width))
        _check_shape("state.strengths", s, (B, K, M))
        _check_shape("push", controls.push, (B, K))
        _check_shape("pop", controls.pop, (B, K))
        _check_shape("value", controls.value, (B, K, self.width))

    def step(self, state: StratificationState,
             controls: StratificationControls) -> StratificationState:
        """Pop, then push (vectorised over batch, stacks and depth); the bottom cell is
        dropped when the buffer is full.

        Parameters
        ----------
        state : :class:`StratificationState` ((B, K, M, W), (B, K, M))
        controls : :class:`StratificationControls`

        Returns
        -------
        new_state : :class:`StratificationState`
        """
        self._check(state, controls)
        V, s = state
        above = _exclusive_cumsum(s, dim=-1)  # (B, K, M) strength above each cell
        s_popped = torch.relu(s - torch.relu(controls.pop.unsqueeze(-1) - above))
        new_s = torch.cat([controls.push.unsqueeze(-1), s_popped[..., :-1]], dim=-1)
        new_V = torch.cat([controls.value.unsqueeze(-2), V[:, :, :-1]], dim=2)
        return StratificationState(new_V, new_s)

    def grow_step(self, state: StratificationState, controls: StratificationControls,
                  limit: int) -> StratificationState:
        r""":meth:`step` on a buffer stored only down to its oldest possibly non-empty cell.

        As for :meth:`SuperpositionStack.grow_step`: after :math:`t` steps from empty
        nothing lies below cell :math:`t`, so the buffer may be stored with depth
        :math:`d \le` ``limit``; the result has depth :math:`\min(d + 1,` ``limit``:math:`)`
        (nothing is dropped while the buffer grows) and equals :meth:`step` on the state
        padded with empty cells (zero value and strength) to ``limit``, cut to that depth.
        """
        self._check(state, controls)
        V, s = state
        if V.shape[2] >= limit:
            return self.step(state, controls)
        return self.step(self.pad(state, V.shape[2] + 1), controls)

    def pad(self, state: StratificationState, depth: int) -> StratificationState:
        """``state`` with empty cells (zero value and strength) appended up to ``depth``."""
        V, s = state
        B, K, d, W = V.shape
        if d >= depth:
            return state
        return StratificationState(torch.cat([V, V.new_zeros(B, K, depth - d, W)], dim=2),
                                   torch.cat([s, s.new_zeros(B, K, depth - d)], dim=2))

    def read_weights(self, state: StratificationState) -> torch.Tensor:
        r"""Weights :math:`\min(s_i, \mathrm{relu}(1 - \sum_{j \text{ above } i} s_j))`, (B, K, M)."""
        s = state.strengths
        return torch.minimum(s, torch.relu(1 - _exclusive_cumsum(s, dim=-1)))

    def read(self, state: StratificationState) -> torch.Tensor:
        """The read vector of every stack, flattened: ``(B, K * W)``."""
        w = self.read_weights(state)  # (B, K, M)
        r = (w.unsqueeze(-1) * state.values).sum(dim=2)  # (B, K, W)
        return r.reshape(r.shape[0], self.read_size)

    def _reference_step(self, state: StratificationState,
                        controls: StratificationControls) -> StratificationState:
        """Loop-over-everything version of :meth:`step` (the slow reference)."""
        self._check(state, controls)
        V, s = state
        B, K, M, W = V.shape
        out_V, out_s = [], []
        for b in range(B):
            Vk, sk = [], []
            for k in range(K):
                u = controls.pop[b, k]
                popped = []
                for i in range(M):
                    above = s.new_zeros(())
                    for j in range(i):
                        above = above + s[b, k, j]
                    popped.append(torch.relu(s[b, k, i] - torch.relu(u - above)))
                sk.append(torch.stack([controls.push[b, k]] + popped[: M - 1]))
                Vk.append(torch.stack([controls.value[b, k]] + [V[b, k, i] for i in range(M - 1)]))
            out_V.append(torch.stack(Vk))
            out_s.append(torch.stack(sk))
        return StratificationState(torch.stack(out_V), torch.stack(out_s))

    def _reference_read(self, state: StratificationState) -> torch.Tensor:
        """Loop version of :meth:`read`."""
        V, s = state
        B, K, M, W = V.shape
        rows = []
        for b in range(B):
            parts = []
            for k in range(K):
                r = V.new_zeros(W)
                left = s.new_ones(())
                for i in range(M):
                    r = r + torch.minimum(s[b, k, i], torch.relu(left)) * V[b, k, i]
                    left = left - s[b, k, i]
                parts.append(r)
            rows.append(torch.cat(parts))
        return torch.stack(rows)

    def extra_repr(self) -> str:
        return f"width={self.width}, max_depth={self.max_depth}, n_stacks={self.n_stacks}"


#: stack kinds by name, as used by :class:`rnnmem.models.stack_rnn.StackRNN`
STACKS = {"superposition": SuperpositionStack, "stratification": StratificationStack}
