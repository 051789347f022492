r"""The nondeterministic stack of DuSell & Chiang: RNS-RNN, its vector variant and a window.

A differentiable simulation of a weighted pushdown automaton with :math:`Q` states and
:math:`S` stack symbols that sums over *all* its runs, as in

* B. DuSell and D. Chiang (2021), "Learning Context-Free Languages with Nondeterministic
  Stack RNNs", CoNLL (the NS-RNN), and (2022), "Learning Hierarchical Structures with
  Differentiable Nondeterministic Stacks", ICLR (the renormalising RNS-RNN, its
  memory-limited version and the vector variant VRNS-RNN); the recurrences below are as
  stated there, the facts checked against the peer code bdusell/nondeterministic-stack-rnn
  (never copied).

The controller emits, at step :math:`j`, non-negative weights for every transition of the
automaton, read from source configuration :math:`(q, x)` (state :math:`q`, top symbol
:math:`x`): push :math:`\delta_j[q,x \to r,xy]`, replace :math:`\delta_j[q,x \to r,y]` and pop
:math:`\delta_j[q,x \to r,\varepsilon]` (weights :math:`\exp` of a linear map of the
controller state). The stack is the table of *inner weights* :math:`\gamma[i \to j][q,x \to
r,y]`: the total weight of the runs that start at step :math:`i` in state :math:`q` with
:math:`x` on top, end at step :math:`j` in state :math:`r` with :math:`y` on top, and never
pop the :math:`x` below :math:`y`. Written out (DuSell & Chiang 2021, 2022), for
:math:`-1 \le i < j`:

.. math::

    \gamma[j-1 \to j][q,x \to r,y] &= \delta_j[q,x \to r,xy], \\
    \gamma[i \to j][q,x \to r,y] &= \sum_{s,z} \gamma[i \to j-1][q,x \to s,z]\,
        \delta_j[s,z \to r,y]
      + \sum_{k=i+1}^{j-2} \sum_{t} \gamma[i \to k][q,x \to t,y]\,
        \gamma'_j[k][t,y \to r] \quad (i \le j-2), \\
    \gamma'_j[k][t,y \to r] &= \sum_{s,z} \gamma[k \to j-1][t,y \to s,z]\,
        \delta_j[s,z \to r,\varepsilon],

with :math:`\gamma[-1 \to 0][q_0,\bot \to q_0,\bot] = 1` (state 0, symbol 0 as the bottom)
and zero elsewhere. The *forward weights* are
:math:`\alpha[-1] = \alpha[0] = e_{(q_0,\bot)}` and

.. math::

    \alpha[j][r,y] = \sum_{i=-1}^{j-1} \sum_{q,x} \alpha[i][q,x]\,
        \gamma[i \to j][q,x \to r,y],

and the stack reading is the distribution over the current state and top symbol,
:math:`\mathbf r_j[r,y] = \alpha[j][r,y] / \sum_{r',y'} \alpha[j][r',y']` (a vector of
size :math:`QS`).

**Vector variant** (VRNS-RNN). Each stack element also carries a vector in
:math:`(0,1)^m`: the controller emits :math:`v_j = \sigma(\cdot)`, pushed with the push
weight, and the bottom holds a learned :math:`v_\bot = \sigma(b)`. The inner table
:math:`\zeta[i \to j][q,x \to r,y] \in \mathbb R^m` (the weighted sum of the vector on top)
follows the recurrence of :math:`\gamma` with the push term multiplied by :math:`v_j`, the
replace term by the same :math:`\delta_j`, and the pop term with :math:`\zeta[i \to k]` in
place of :math:`\gamma[i \to k]` (the vector under the popped one); :math:`\zeta[-1 \to
0][q_0,\bot \to q_0,\bot] = v_\bot`. The reading is
:math:`\eta[j][r,y] / \sum \alpha[j]` with :math:`\eta[j] = \sum_i \alpha[i]\,\zeta[i \to j]`
(size :math:`QSm`). Here :math:`\gamma` and :math:`\zeta` are one table with
:math:`1 + m` channels (channel 0 is :math:`\gamma`: the weight times the constant 1).
The bottom-vector convention differs from the peer code, which sets :math:`\zeta[-1 \to 0]`
to :math:`v_\bot` for every pair of configurations, including those of zero weight.

**Limited window** (the memory-limited RNS-RNN of DuSell & Chiang 2022): with window :math:`D`, only spans with
:math:`j - i \le D` are kept, in :math:`\gamma` and in the sum defining :math:`\alpha`; the
work per step is then :math:`O(D^2)` instead of :math:`O(j^2)` and a sequence costs time
linear in :math:`T`. A window :math:`D \ge T` is the full stack.

Numerics: **scaling**, not log space. The peer (bdusell/nondeterministic-stack-rnn) keeps
:math:`\log\gamma` and sums with a log-semiring einsum; here the tables are kept in real
space, rescaled every step, so that the :math:`O(j^2)` contraction of the pop term is one
batched matrix product (BLAS) rather than a log-sum-exp over a materialised
:math:`(j \times j \times Q^3 S^2)` intermediate. The recurrences are homogeneous: every
term of column :math:`j` of :math:`\gamma` carries exactly one factor :math:`\delta_j`, so
storing :math:`\tilde\gamma[i \to j] = \gamma[i \to j] / \prod_{m=i+1}^{j} c_m` (and
:math:`\tilde\alpha[j] = \alpha[j] / \prod_{m \le j} c_m`) leaves the recurrences unchanged
when :math:`\delta_j` is replaced by :math:`\delta_j / c_j`, for any positive :math:`c_m`. We
take :math:`c_j = \sum \hat\alpha[j]` (the forward normaliser, as in the scaled forward
algorithm of hidden Markov models), so :math:`\tilde\alpha[j]` *is* the reading and
:math:`\log \sum \alpha[j] = \sum_{m \le j} \log c_m` is tracked exactly. The controller's
weights are formed as :math:`\exp(z - \max z)` (the same homogeneity), so they never
overflow. Limits: entries of :math:`\tilde\gamma` for configurations of negligible forward
weight can grow like the ratio of the largest to the typical transition weight along a
span; with logits of moderate size (a tanh/LSTM controller) this stays far from the
float32 range, but logits beyond about :math:`\pm 40` over long spans can overflow where
the log-space peer would not. The normaliser :math:`c_j` is differentiated like any other
operation (its value does not change the readings, but :math:`\log\sum\alpha[j] =
\sum_m \log c_m` holds as a function only if every :math:`c_m` is).

Implementation: every column :math:`\gamma[\cdot \to j]` is an autograd tensor and is
also copied into a preallocated *tape* (rows :math:`i`, columns :math:`k`, laid out so that
the pop term of step :math:`j` is one strided matrix product over :math:`(k, t)` per batch
element and top symbol :math:`y`). The tape is read by :class:`_PopTerm` and written by
:class:`_TapeWrite`, two small :class:`torch.autograd.Function` s whose backward passes
accumulate into a gradient tape; a scalar *token* threads every read to the previous
write, so that autograd runs the backward of the write of column :math:`k` only after
every read of it. Memory is :math:`O(T^2 Q^2 S^2 (1+m))` for the full stack (the issue
quotes 2.6 GB for the peer at T = 200, batch 32) and :math:`O(T D Q^2 S^2 (1+m))` with a
window (columns live in :math:`2D` circular slots).

The state is functional in form (a :class:`NondeterministicState` of tensors, returned
anew by :meth:`NondeterministicStack.step`) but the tape inside it is shared and written in
place: advance each state at most once. A state carried to another chunk goes through
:meth:`NondeterministicStack.extend`, which moves a detached one to a fresh tape (rolled
over to the last :math:`D` columns with a window).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from ..errors import InvalidParameterError, ShapeError
from ._nondeterministic_tape import _PopTerm, _TapeWrite, _pop_tiles

__all__ = ["NondeterministicStack", "NondeterministicControls", "NondeterministicState",
           "stack_rnn_options"]


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class NondeterministicControls(NamedTuple):
    r"""Transition weights of one step (non-negative, any common scale; the runs they allow
    must keep a positive total weight, as strictly positive weights always do: a step that
    leaves no run makes :math:`\sum\alpha[j] = 0` and the reading undefined).

    push   : (B, QS, QS)  :math:`\delta[q,x \to r,xy]`, rows ``q*S + x``, columns ``r*S + y``
    repl   : (B, QS, QS)  :math:`\delta[q,x \to r,y]`
    pop    : (B, QS, Q)   :math:`\delta[q,x \to r,\varepsilon]`
    vector : (B, m) or None  the vector pushed (vector variant), in :math:`(0, 1)`
    """

    push: torch.Tensor
    repl: torch.Tensor
    pop: torch.Tensor
    vector: torch.Tensor | None = None


class NondeterministicState(NamedTuple):
    """State after step ``j`` (all tensors, so that it can be detached and mapped).

    token    : () scalar that orders the backward passes of the tape's reads and writes
    column   : (B, S, L, QS, C, Q) the last column :math:`\\tilde\\gamma[i \\to j]` (with the
               vector channels), rows ``i = j - L .. j - 1``, entry ``[b, y, i, q*S+x, c, r]``
    alphas   : tuple of (B, QS), :math:`\\tilde\\alpha[i]` for the rows a next column needs
    eta      : (B, QS, m) the vector reading :math:`\\tilde\\eta[j]`, or None
    log_total: (B,) :math:`\\log \\sum_{r,y} \\alpha[j][r,y]` (unscaled total weight)
    values   : (B, S, R, QS, C, K, Q) the tape (no gradient), rows ``i + 1``, slots ``k``
    grads    : same shape, the gradient tape
    step     : () int64 on the CPU, ``j``
    written  : () int64 on the CPU, shared by all states on this tape: the last column
               written (a state whose ``step`` is behind it was already advanced)
    """

    token: torch.Tensor
    column: torch.Tensor
    alphas: tuple
    eta: torch.Tensor | None
    log_total: torch.Tensor
    values: torch.Tensor
    grads: torch.Tensor
    step: torch.Tensor
    written: torch.Tensor


def _unadvanced_step(state) -> int:
    """The step ``j`` of ``state``, checked to be a :class:`NondeterministicState` whose
    tape holds nothing after ``j`` (its tape is written in place: a state advances once)."""
    if not isinstance(state, NondeterministicState):
        raise ShapeError(f"state must be a NondeterministicState, got "
                         f"{type(state).__name__}")
    j = int(state.step)
    if int(state.written) != j:
        raise InvalidParameterError(f"this state (step {j}) was already advanced: its "
                                    "tape holds later steps; advance each state once")
    return j


class NondeterministicStack(nn.Module):
    r"""Nondeterministic stack (RNS-RNN / VRNS-RNN, optionally with a window); see the
    module docstring for the recurrences, the scaling and the references.

    Parameters
    ----------
    num_states : int
        :math:`Q`, states of the automaton (state 0 is the initial one).
    stack_symbols : int
        :math:`S`, stack symbols (symbol 0 is the bottom :math:`\bot`).
    vector_width : int, optional
        :math:`m`: the vector variant (VRNS-RNN) with vectors in :math:`(0,1)^m` on the
        stack; ``None`` for the RNS-RNN.
    window : int, optional
        :math:`D \ge 1`: keep only spans :math:`j - i \le D` (the limited RNS-RNN, linear
        time); ``None`` keeps them all.
    hidden_size : int, optional
        Controller size; when given the module owns ``action`` (to :math:`QS(2QS + Q)`
        logits, weights :math:`\exp`), and for the vector variant ``value`` (to :math:`m`,
        through a sigmoid) and ``bottom`` (the bottom vector's logit, initially 0).
    dtype, device : optional
        Factory arguments of the interface layers.
    """

    kind = "nondeterministic"

    def __init__(self, num_states: int = 2, stack_symbols: int = 3, *,
                 vector_width: int | None = None, window: int | None = None,
                 hidden_size: int | None = None, dtype=None, device=None):
        super().__init__()
        self.num_states = _positive_int("num_states", num_states)
        self.stack_symbols = _positive_int("stack_symbols", stack_symbols)
        self.vector_width = (None if vector_width is None
                             else _positive_int("vector_width", vector_width))
        self.window = None if window is None else _positive_int("window", window)
        self.hidden_size = hidden_size
        Q, S = self.num_states, self.stack_symbols
        N = Q * S
        fk = {"dtype": dtype, "device": device}
        if self.vector_width is not None:
            self.bottom = nn.Parameter(torch.zeros(self.vector_width, **fk))
        if hidden_size is not None:
            _positive_int("hidden_size", hidden_size)
            self.action = nn.Linear(hidden_size, N * (2 * N + Q), **fk)
            if self.vector_width is not None:
                self.value = nn.Linear(hidden_size, self.vector_width, **fk)

    # ---- sizes ---------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        """:math:`1 + m` (the weight and the vector's components)."""
        return 1 + (self.vector_width or 0)

    @property
    def read_size(self) -> int:
        """:math:`QS` (RNS) or :math:`QSm` (vector variant)."""
        return self.num_states * self.stack_symbols * (self.vector_width or 1)

    # ---- controls ------------------------------------------------------------------------
    def controls(self, h: torch.Tensor) -> NondeterministicControls:
        r"""Weights :math:`\exp(A h - \max)` and, for the vector variant, :math:`\sigma(V h)`.

        The common shift by the (detached) maximum over all of a batch element's logits is
        a scale of the step's weights, to which the stack is invariant (module docstring).
        """
        if self.hidden_size is None:
            raise InvalidParameterError("this stack was built without hidden_size: "
                                        "it has no interface layers")
        if h.dim() != 2 or h.shape[-1] != self.hidden_size:
            raise ShapeError(f"h must be (B, {self.hidden_size}), got {tuple(h.shape)}")
        B, Q, N = h.shape[0], self.num_states, self.num_states * self.stack_symbols
        z = self.action(h).view(B, N, 2 * N + Q)
        w = torch.exp(z - z.detach().amax(dim=(1, 2), keepdim=True))
        push, repl, pop = w.split([N, N, Q], dim=-1)
        vec = torch.sigmoid(self.value(h)) if self.vector_width is not None else None
        return NondeterministicControls(push, repl, pop, vec)

    def _check_controls(self, c: NondeterministicControls, B: int) -> None:
        Q, N = self.num_states, self.num_states * self.stack_symbols
        for name, t, shape in (("push", c.push, (B, N, N)), ("repl", c.repl, (B, N, N)),
                               ("pop", c.pop, (B, N, Q))):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                raise ShapeError(f"{name} must have shape {shape}, got "
                                 f"{tuple(getattr(t, 'shape', ()))}")
        if self.vector_width is None:
            if c.vector is not None:
                raise ShapeError("vector given to a stack without vector_width")
        elif not isinstance(c.vector, torch.Tensor) or tuple(c.vector.shape) != (
                B, self.vector_width):
            raise ShapeError(f"vector must have shape {(B, self.vector_width)}, got "
                             f"{tuple(getattr(c.vector, 'shape', ()))}")

    def bottom_vector(self, dtype=None, device=None) -> torch.Tensor:
        r""":math:`v_\bot = \sigma(b)`, (m,) (vector variant only)."""
        return torch.sigmoid(self.bottom.to(dtype=dtype, device=device))

    # ---- state ---------------------------------------------------------------------------
    def _slots(self, capacity: int) -> int:
        # Column k lives in slot k mod K. With a window D, column k occupies tape rows
        # i in [k - D, k - 1]; 2D slots keep every column's reads clear of its successors
        # in the same slot (rows [k + D, ...]), in forward and in backward.
        if self.window is None or 2 * self.window >= capacity + 1:
            return capacity + 1
        return 2 * self.window

    def initial_state(self, batch_size: int, *, capacity: int, dtype=None,
                      device=None) -> NondeterministicState:
        r"""The stack before any step: :math:`\alpha[-1] = \alpha[0] = e_{(q_0,\bot)}`.

        ``capacity`` is the number of steps the state can take (the tape's size).
        """
        _positive_int("batch_size", batch_size)
        _positive_int("capacity", capacity)
        B, S, N, C, Q = (batch_size, self.stack_symbols,
                         self.num_states * self.stack_symbols, self.channels, self.num_states)
        fk = {"dtype": dtype, "device": device}
        col = torch.zeros(B, S, 1, N, C, Q, **fk)  # rows: i = -1
        col[:, 0, 0, 0, 0, 0] = 1.0  # gamma[-1 -> 0][q0, bot -> q0, bot]
        eta = None
        if self.vector_width is not None:
            vb = self.bottom_vector(**fk)
            col = col.clone()
            col[:, 0, 0, 0, 1:, 0] = vb
            eta = torch.zeros(B, N, self.vector_width, **fk)
            eta[:, 0] = vb
        alpha = torch.zeros(B, N, **fk)
        alpha[:, 0] = 1.0
        K = self._slots(capacity)
        values = torch.zeros(B, S, capacity + 1, N, C, K, Q, **fk)
        grads = torch.zeros_like(values)
        token = torch.zeros((), **fk)
        token = _TapeWrite.apply(col, token, (values, grads), (0, 1), 0)
        return NondeterministicState(token, col, (alpha, alpha), eta,
                                     torch.zeros(B, **fk), values, grads,
                                     torch.zeros((), dtype=torch.long),
                                     torch.zeros((), dtype=torch.long))

    def extend(self, state: NondeterministicState, steps: int) -> NondeterministicState:
        r"""``state`` ready for ``steps`` more steps (a state carried to the next chunk of
        truncated BPTT, or across the windows of an evaluation).

        A state still in the autograd graph (its column requires grad: the same graph goes
        on) keeps its tape, which must have room for the steps. Any other state (detached,
        or made without grad) that will take steps into a new graph, or whose tape has no
        room, moves to a fresh tape pair for the steps: with a window :math:`D`, only the
        last :math:`D` columns and their rows, all that later steps read, re-indexed so
        that step :math:`j` becomes :math:`\min(j, D)` (the tape rolls over: memory
        :math:`O(D(D + \text{steps}))` however long the text); without a window, every
        column (the full stack keeps every span: memory grows with the whole length). The
        fresh gradient tape keeps the backward of the new steps out of the graph that made
        ``state``, which a shared tape would reach through the columns both read.
        """
        j = _unadvanced_step(state)
        steps = _positive_int("steps", steps)
        values = state.values
        B, S, R, N, C, K, Q = values.shape
        room = j + steps <= R - 1
        if state.column.requires_grad:
            if not room:
                raise InvalidParameterError(
                    f"this state (step {j}) is in the autograd graph and its tape has room "
                    f"for {R - 1 - j} more steps, not {steps}: detach it "
                    "(StackRNN.detach_state, as truncated BPTT does) or pass a larger "
                    "capacity to initial_state")
            return state
        if room and (j == 0 or not torch.is_grad_enabled()):
            return state  # no graph to keep apart, and room on the tape
        from ..limits import check_memory

        D = self.window
        o = 0 if D is None else max(0, j - D)  # the columns and rows before o + 1 are done
        jn = j - o
        cap = max(jn + steps, R - 1 - o)  # never less room than the tape had
        K2 = self._slots(cap)
        shape = (B, S, cap + 1, N, C, K2, Q)
        check_memory(2 * values.element_size() * B * S * (cap + 1) * N * C * K2 * Q,
                     f"the nondeterministic stack's tape for {cap} steps",
                     hint="use window=D (the memory-limited RNS-RNN) or shorter sequences")
        new = values.new_zeros(shape)
        if o == 0 and K >= j + 1 and K2 >= j + 1:  # no slot wraps: one block
            new[:, :, :j + 1, :, :, :j + 1] = values[:, :, :j + 1, :, :, :j + 1]
        else:
            first = 0 if o == 0 else o + 1
            for k in range(first, j + 1):  # column k: rows lo_k + 1 .. k, in slot k mod K
                lo_k = -1 if D is None else max(-1, k - D)
                a = max(lo_k + 1, first)
                new[:, :, a - o:k - o + 1, :, :, (k - o) % K2] = \
                    values[:, :, a:k + 1, :, :, k % K]
        return NondeterministicState(values.new_zeros(()), state.column, state.alphas,
                                     state.eta, state.log_total, new, torch.zeros_like(new),
                                     torch.tensor(jn), torch.tensor(jn))

    def step_work(self, batch_size: int, step: int) -> int:
        r"""Multiply-adds of step ``step``'s products: the replace contraction and the
        forward weights (:math:`B L C N^3 + B L C N^2`, :math:`L` the column's rows) and
        the pop term's product (:math:`B S n_k^2 N C Q^2`, :math:`n_k` its split points),
        for the one-thread rule of small step loops
        (:func:`rnnmem.models._device.step_threads`). It grows with the step up to the
        window, or without bound for the full stack."""
        N, Q, S, C = (self.num_states * self.stack_symbols, self.num_states,
                      self.stack_symbols, self.channels)
        lo = -1 if self.window is None else max(-1, step - self.window)
        L, nk = step - lo, max(0, step - 2 - lo)
        return batch_size * C * (L * N ** 3 + L * N * N + S * nk * nk * N * Q * Q)

    def read(self, state: NondeterministicState) -> torch.Tensor:
        """The reading :math:`\\mathbf r_j`, ``(B, QS)``, or the vector reading ``(B, QSm)``."""
        if self.vector_width is None:
            return state.alphas[-1]
        return state.eta.reshape(state.eta.shape[0], -1)

    # ---- one step ------------------------------------------------------------------------
    def step(self, state: NondeterministicState,
             controls: NondeterministicControls) -> NondeterministicState:
        """Column :math:`j` of :math:`\\gamma` (and :math:`\\zeta`) and :math:`\\alpha[j]`
        from the state after step :math:`j - 1`; vectorised over the batch, the rows
        :math:`i` and the split points :math:`k`."""
        j = _unadvanced_step(state) + 1
        values, grads = state.values, state.grads
        B, S, R, N, C, K, Q = values.shape
        self._check_controls(controls, B)
        if j > R - 1:
            raise InvalidParameterError(f"the nondeterministic stack was created for {R - 1} "
                                        "steps: pass a larger capacity to initial_state (or "
                                        "extend the state, as StackRNN.forward does)")
        D = self.window if self.window is not None else R
        lo = max(-1, j - D)            # rows of column j: i = lo .. j-1
        prev = state.column            # rows i = lo_prev .. j-2
        prev = prev[:, :, prev.shape[2] - (j - 1 - lo):]  # rows i = lo .. j-2
        nk = max(0, j - 2 - lo)        # pop rows i = lo .. j-3, split points k = lo+1 .. j-2
        dt = values.dtype
        push = controls.push.to(dt).view(B, N, Q, S)
        repl = controls.repl.to(dt).view(B, Q, S, Q, S)
        pop = controls.pop.to(dt).view(B, Q, S, Q)
        # push row (i = j-1): delta[q,x -> r,xy] * (1, v)
        ones = push.new_ones(B, 1)
        vec = ones if controls.vector is None else torch.cat([ones, controls.vector.to(dt)], 1)
        push_row = (push.permute(0, 3, 1, 2)[:, :, None, :, None, :]
                    * vec[:, None, None, None, :, None])  # (B, S, 1, N, C, Q)
        # replace: sum_{s,z} col[i -> j-1][q,x,c -> s,z] delta[s,z -> r,y]
        rep = torch.einsum("bzlncs,bszry->bylncr", prev, repl)  # (B, S, L-1, N, C, Q)
        if nk > 0:
            # gamma'[k][t,y -> r] = sum_{s,z} gamma[k -> j-1][t,y -> s,z] delta[s,z -> r,eps]
            g = prev[:, :, 1:, :, 0].reshape(B, S, nk, Q, S, Q)  # [b, z, k, t, y, s]
            gprime = torch.einsum("bzktys,bszr->byktr", g, pop).contiguous()
            tiles = _pop_tiles(nk, (lo + 1) % K, K)  # columns k = lo+1 .. j-2
            pop_term = _PopTerm.apply(gprime, state.token, (values, grads),
                                      (lo + 1, j - 2 + 1), tiles)
            zhat = torch.cat([rep[:, :, :nk] + pop_term, rep[:, :, nk:], push_row], dim=2)
        else:
            zhat = torch.cat([rep, push_row], dim=2)  # (B, S, L, N, C, Q)
        # alpha[j] (and eta[j]) = sum_i alpha[i] * column j
        A = torch.stack(state.alphas[len(state.alphas) - (j - lo):], dim=1)  # (B, L, N)
        ahat = torch.einsum("bln,bylncr->bryc", A, zhat).reshape(B, N, C)
        c = ahat[..., 0].sum(-1)  # (B,) the normaliser c_j
        alpha = ahat[..., 0] / c[:, None]
        eta = ahat[..., 1:] / c[:, None, None] if self.vector_width is not None else None
        column = zhat / c[:, None, None, None, None, None]
        token = _TapeWrite.apply(column, state.token, (values, grads), (lo + 1, j + 1), j % K)
        state.written.fill_(j)
        keep = D + 1  # alpha[i] for i >= j + 1 - D are needed by the next column
        alphas = state.alphas[-keep + 1:] + (alpha,) if len(state.alphas) >= keep else \
            state.alphas + (alpha,)
        return NondeterministicState(token, column, alphas, eta,
                                     state.log_total + torch.log(c), values, grads,
                                     torch.tensor(j), state.written)

    def forward(self, h: torch.Tensor, state: NondeterministicState):
        """``(read, new_state)`` after one step driven by the controller state ``h``."""
        new = self.step(state, self.controls(h))
        return self.read(new), new

    # ---- whole sequences -----------------------------------------------------------------
    def run(self, controls: Sequence[NondeterministicControls]):
        """Readings and log total weights after each of ``T`` steps from the initial state.

        Returns
        -------
        readings : (B, T, read_size)
        log_total : (B, T), :math:`\\log \\sum_{r,y} \\alpha[j][r,y]`, ``j = 1 .. T``
        """
        if len(controls) < 1:
            raise InvalidParameterError("controls must hold at least one step")
        ref = controls[0].push
        state = self.initial_state(ref.shape[0], capacity=len(controls), dtype=ref.dtype,
                                   device=ref.device)
        reads, totals = [], []
        for c in controls:
            state = self.step(state, c)
            reads.append(self.read(state))
            totals.append(state.log_total)
        return torch.stack(reads, 1), torch.stack(totals, 1)

    def _reference_run(self, controls: Sequence[NondeterministicControls]):
        """:meth:`run` by the recurrences written term by term, in float64, unscaled (a dict
        of :math:`\\gamma[i \\to j]` tables, loops over :math:`i`, :math:`j` and :math:`k`);
        the result is cast back to the controls' dtype. The slow reference."""
        if len(controls) < 1:
            raise InvalidParameterError("controls must hold at least one step")
        Q, S, N = self.num_states, self.stack_symbols, self.num_states * self.stack_symbols
        B, out_dt = controls[0].push.shape[0], controls[0].push.dtype
        for c in controls:
            self._check_controls(c, B)
        f64 = dict(dtype=torch.float64, device=controls[0].push.device)
        T = len(controls)
        D = self.window if self.window is not None else T + 1
        m = self.vector_width
        # gamma[(i, j)] : (B, Q, S, Q, S) = [b, q, x, r, y]; zeta[(i, j)] : (..., m)
        gamma, zeta, alpha, eta = {}, {}, {}, {}
        g0 = torch.zeros(B, Q, S, Q, S, **f64)
        g0[:, 0, 0, 0, 0] = 1.0
        gamma[(-1, 0)] = g0
        a0 = torch.zeros(B, Q, S, **f64)
        a0[:, 0, 0] = 1.0
        alpha[-1] = alpha[0] = a0
        if m is not None:
            z0 = torch.zeros(B, Q, S, Q, S, m, **f64)
            z0[:, 0, 0, 0, 0] = self.bottom_vector(**f64)
            zeta[(-1, 0)] = z0
        reads, totals = [], []
        for j in range(1, T + 1):
            c = controls[j - 1]
            push = c.push.to(torch.float64).view(B, Q, S, Q, S)
            repl = c.repl.to(torch.float64).view(B, Q, S, Q, S)
            pop = c.pop.to(torch.float64).view(B, Q, S, Q)
            v = c.vector.to(torch.float64) if m is not None else None
            for i in range(max(-1, j - D), j):
                if i == j - 1:
                    gamma[(i, j)] = push
                    if m is not None:
                        zeta[(i, j)] = push[..., None] * v[:, None, None, None, None, :]
                    continue
                g = torch.einsum("bqxsz,bszry->bqxry", gamma[(i, j - 1)], repl)
                if m is not None:
                    z = torch.einsum("bqxszm,bszry->bqxrym", zeta[(i, j - 1)], repl)
                for k in range(i + 1, j - 1):
                    # gamma'[k][t,y -> r] = sum_{s,z} gamma[k -> j-1][t,y -> s,z] pop[s,z -> r]
                    gp = torch.einsum("btysz,bszr->btyr", gamma[(k, j - 1)], pop)
                    g = g + torch.einsum("bqxty,btyr->bqxry", gamma[(i, k)], gp)
                    if m is not None:
                        z = z + torch.einsum("bqxtym,btyr->bqxrym", zeta[(i, k)], gp)
                gamma[(i, j)] = g
                if m is not None:
                    zeta[(i, j)] = z
            lo = max(-1, j - D)
            alpha[j] = sum(torch.einsum("bqx,bqxry->bry", alpha[i], gamma[(i, j)])
                           for i in range(lo, j))
            total = alpha[j].sum(dim=(1, 2))
            if m is None:
                reads.append((alpha[j] / total[:, None, None]).reshape(B, N))
            else:
                eta_j = sum(torch.einsum("bqx,bqxrym->brym", alpha[i], zeta[(i, j)])
                            for i in range(lo, j))
                reads.append((eta_j / total[:, None, None, None]).reshape(B, N * m))
            totals.append(torch.log(total))
        return (torch.stack(reads, 1).to(out_dt), torch.stack(totals, 1).to(out_dt))

    def extra_repr(self) -> str:
        return (f"num_states={self.num_states}, stack_symbols={self.stack_symbols}, "
                f"vector_width={self.vector_width}, window={self.window}")


def stack_rnn_options(num_states, stack_symbols, window, vector_width, *, stack_depth,
                      n_stacks, read_depth, compile) -> dict:
    """The options a :class:`~rnnmem.models.stack_rnn.StackRNN` passes to this stack,
    validated against the stack-RNN options that do not apply to it."""
    for nm, v in (("num_states", num_states), ("stack_symbols", stack_symbols)):
        _positive_int(nm, v)
    for nm, v in (("window", window), ("vector_width", vector_width)):
        if v is not None:
            _positive_int(nm, v)
    if stack_depth is not None:
        raise InvalidParameterError("stack_depth does not apply to the nondeterministic stack "
                                    "(it has no depth limit; window=D limits the spans)")
    if n_stacks != 1 or read_depth != 1:
        raise InvalidParameterError("the nondeterministic stack takes n_stacks=1 and "
                                    f"read_depth=1, got {n_stacks} and {read_depth}")
    if compile:
        raise InvalidParameterError("compile=True is not supported with the nondeterministic "
                                    "stack (its tape is written in place)")
    return dict(num_states=num_states, stack_symbols=stack_symbols, window=window,
                vector_width=vector_width)
