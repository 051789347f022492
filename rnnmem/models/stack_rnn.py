r"""Stack-augmented recurrent networks (and their memory-less baselines).

A controller RNN (Elman ``"srnn"``, ``"lstm"`` or ``"gru"``) reads at each step the input
symbol and the previous stack read, and drives a differentiable stack
(:mod:`rnnmem.models.stacks`):

.. math::

    h_t &= \mathrm{cell}\big([e(x_t);\, r_{t-1}],\, h_{t-1}\big), \\
    S_t &= \mathrm{stack\_step}\big(S_{t-1},\, \mathrm{controls}(h_t)\big), \qquad
    r_t = \mathrm{read}(S_t), \\
    y_t &= C h_t ,

as in Joulin & Mikolov (2015; the stack read is fed back at the next step) and
Grefenstette et al. (2015), in the form used by DuSell & Chiang (2020, "Learning
Context-Free Languages with Nondeterministic Stack RNNs", CoNLL; and 2023, "The Surprising
Computational Power of Nondeterministic Stack RNNs", ICLR), where the output layer reads the
controller state only. With ``stack="none"`` the same class is the plain RNN baseline
(:math:`r_t` absent).

The three parts are submodules with fixed names, so that components can be frozen
(:mod:`rnnmem.models.freezing`) as in Das & Mali (2024, arXiv:2410.03154):

* ``controller`` -- the input map (``controller.embedding``, absent for one-hot input) and
  the recurrent cell (``controller.cell``);
* ``memory`` -- the stack interface (``memory.action``, ``memory.value``); an empty module
  when ``stack="none"``;
* ``classifier`` -- the linear output layer :math:`C`.

Inputs are integer token ids ``(B, T)`` (or, for black-box probing, float vectors
``(B, T, vocab_size)`` in the model's dtype, mixed through the same input map as one-hot
codes). Outputs are logits ``(B, T, output_size)``, one per step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import AlphabetError, InvalidParameterError, NonFiniteError, ShapeError, UnknownNameError
from . import lstm_sequence
from ._common import CompiledStep
from ._device import gate_work, step_threads
from .base import RecurrentModel, map_tensors
from .nondeterministic import NondeterministicStack, stack_rnn_options
from .registry import register_model
from .stacks import ACTION_SOFTMAX, StratificationStack, SuperpositionStack

__all__ = ["StackRNN", "StackRNNState", "Controller", "CONTROLLERS", "STACK_KINDS", "MODES"]

CONTROLLERS = ("srnn", "lstm", "gru")
STACK_KINDS = ("superposition", "stratification", "none", "nondeterministic")
MODES = ("recognition", "next_symbol", "lm")
POOLS = ("last", "mean")


class StackRNNState(NamedTuple):
    """Recurrent state carried between steps (and chunks, for truncated BPTT).

    controller : (B, H) for srnn/gru; ``(h, c)`` each (B, H) for lstm
    stack      : the stack's state (see :mod:`rnnmem.models.stacks`), ``None`` without stack
    read       : (B, read_size) the last stack read :math:`r_{t-1}`, ``None`` without stack
    """

    controller: Any
    stack: Any
    read: Any


def _tree_map(fn, obj):
    return map_tensors(fn, obj, lambda o: ShapeError(
        f"unexpected object of type {type(o).__name__} in a state"))


def _check_positive(name: str, value, also: str = "") -> int:
    """``value`` when it is a positive integer, else the error naming ``name`` (and
    ``also``, another spelling the caller accepts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        alt = f" or {also}" if also else ""
        raise InvalidParameterError(f"{name} must be a positive integer{alt}, got {value!r}")
    return value


class Controller(nn.Module):
    """Input map and recurrent cell of a (stack) RNN.

    The input map is ``embedding`` (an :class:`torch.nn.Embedding`) when ``embedding_dim`` is
    given, else the one-hot code of the token. The cell is :class:`torch.nn.RNNCell` (tanh
    Elman network, ``"srnn"``), :class:`torch.nn.LSTMCell` or :class:`torch.nn.GRUCell`,
    reading ``[e(x_t); r_{t-1}]``.
    """

    def __init__(self, kind: str, vocab_size: int, hidden_size: int, read_size: int = 0,
                 embedding_dim: int | None = None, *, dtype=None, device=None):
        super().__init__()
        if kind not in CONTROLLERS:
            raise UnknownNameError("controller", kind, CONTROLLERS)
        fk = {"dtype": dtype, "device": device}
        self.kind, self.vocab_size, self.hidden_size = kind, vocab_size, hidden_size
        self.input_size = embedding_dim if embedding_dim is not None else vocab_size
        self.embedding = (nn.Embedding(vocab_size, embedding_dim, **fk)
                          if embedding_dim is not None else None)
        cell = {"srnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind]
        self.cell = cell(self.input_size + read_size, hidden_size, **fk)

    def embed(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Token ids ``(...)`` or soft codes ``(..., vocab)`` -> ``(..., input_size)``."""
        if x.is_floating_point():
            if self.embedding is None:
                return x
            return x @ self.embedding.weight  # (..., E)
        if self.embedding is not None:
            return self.embedding(x)
        return nn.functional.one_hot(x, self.vocab_size).to(dtype)

    def initial_state(self, batch_size: int, *, dtype, device):
        h = torch.zeros(batch_size, self.hidden_size, dtype=dtype, device=device)
        return (h, torch.zeros_like(h)) if self.kind == "lstm" else h

    def forward(self, inp: torch.Tensor, state):
        """One step: ``(h_t, new_state)``."""
        new = self.cell(inp, state)
        return (new[0] if self.kind == "lstm" else new), new


@register_model("stack_rnn")
class StackRNN(RecurrentModel):
    r"""RNN controller with a differentiable stack; ``stack="none"`` is the plain RNN.

    Parameters
    ----------
    vocab_size : int
        Number of input symbols (token ids ``0 .. vocab_size - 1``).
    output_size : int, optional
        Number of logits per step. Default: ``vocab_size`` for ``"lm"`` and
        ``"next_symbol"``, 2 (reject, accept) for ``"recognition"``.
    controller : {"srnn", "lstm", "gru"}
    stack : {"superposition", "stratification", "none"}
        :class:`~rnnmem.models.stacks.SuperpositionStack` (Joulin & Mikolov 2015) or
        :class:`~rnnmem.models.stacks.StratificationStack` (Grefenstette et al. 2015);
        ``"none"`` (or ``None``, which is what ``--model-arg stack=none`` parses to on the
        command line) is the memory-less controller. ``"nondeterministic"``:
        :class:`~rnnmem.models.nondeterministic.NondeterministicStack` (DuSell & Chiang
        2021/2022: RNS-RNN, VRNS-RNN with ``vector_width``, limited with ``window``); its
        reading is the distribution over (state, top symbol), fed back like the others;
        ``stack_width``, ``stack_depth``, ``n_stacks`` and ``read_depth`` do not apply.
    width : int
        Hidden size of the controller (formerly ``hidden_size``, still accepted,
        deprecated).
    stack_width : int
        Width :math:`W` of a stack element.
    stack_depth : int or "sequence", optional
        Depth limit (superposition) or buffer capacity (stratification). ``None`` (also
        spelt ``"sequence"``, the name protocol files and reports use, since TOML has no
        null): the length of the first sequence (chunk) the state is created for, so
        nothing is ever dropped within it.
    n_stacks : int
        Independent stacks driven by the controller.
    read_depth : int
        Top cells read (superposition only; stratification reads one vector).
    num_states, stack_symbols : int
        :math:`Q` and :math:`S` of the nondeterministic stack (default 2 and 3).
    window : int, optional
        Window :math:`D` of the limited nondeterministic stack (linear time); ``None``: all
        spans.
    vector_width : int, optional
        Width :math:`m` of the vectors of the vector nondeterministic stack (VRNS-RNN);
        ``None``: the RNS-RNN.
    mode : {"recognition", "next_symbol", "lm"}
        All modes return per-step logits from :meth:`forward`. ``"recognition"`` models are
        meant to be read through :meth:`classify` (one label per sequence); ``"lm"`` is
        meant for truncated BPTT with the state carried across chunks.
    embedding_dim : int, optional
        Learned embedding size; ``None`` feeds the one-hot code.
    pool : {"last", "mean"}
        How :meth:`classify` pools the per-step logits: those of the last valid position
        (default; the controller has then read the whole string) or their mean over the
        valid positions.
    action_softmax : {"per_stack", "joint"}
        Superposition stack only: a softmax per stack (default) or one joint softmax over
        all stacks' action logits (DeepMind's ``StackRNNCore``); see
        :class:`~rnnmem.models.stacks.SuperpositionStack`.
    compile : bool
        Run the step function through :func:`torch.compile`; if compiling fails the model
        warns once and runs eagerly.

        With an LSTM controller and a superposition stack (or none), :meth:`forward` runs
        the whole sequence as one autograd node (:mod:`rnnmem.models.lstm_sequence`) for
        float32/float64 without ``compile``, ``record_stack``, :mod:`torch.func` or
        forward-mode AD; set the attribute ``fused_sequence = False`` for the step-by-step
        graph (same values to rounding).
    dtype, device
        Parameter dtype (``float16``, ``bfloat16``, ``float32``, ``float64``) and device
        (``"auto"``: CUDA when available). All computation is in this dtype.
    seed : int, optional
        Seed of the parameter initialisation (torch's default initialisers, run under a
        forked RNG so the global stream is untouched); ``None`` uses the global RNG.
    """

    recurrent_parameter_names = ("controller", "memory")

    # The model contract (rnnmem.models.base): spectrum() and slowest_decay_rate() raise
    # NotApplicableError (gated controller and a stack: no fixed linear recurrence);
    # memory_function(t) is the black-box estimator on soft input codes (B, T, vocab_size),
    # one column per logit.

    def __init__(self, vocab_size: int, output_size: int | None = None, *,
                 controller: str = "lstm", stack: str = "superposition", width: int = 32,
                 stack_width: int = 8, stack_depth: int | None = None, n_stacks: int = 1,
                 read_depth: int = 1, mode: str = "next_symbol",
                 embedding_dim: int | None = None, pool: str = "last",
                 action_softmax: str = "per_stack", compile: bool = False,
                 dtype: Any = "float32", device: Any = "auto", seed: int | None = None,
                 input_dim: int | None = None, output_dim: int | None = None,
                 dt: float = 1.0, time: str = "discrete", num_states: int = 2,
                 stack_symbols: int = 3, window: int | None = None,
                 vector_width: int | None = None):
        _check_positive("vocab_size", vocab_size)
        if mode not in MODES:
            raise UnknownNameError("mode", mode, MODES)
        if controller not in CONTROLLERS:
            raise UnknownNameError("controller", controller, CONTROLLERS)
        if stack is None:
            stack = "none"
        if stack not in STACK_KINDS:
            raise UnknownNameError("stack", stack, STACK_KINDS)
        if pool not in POOLS:
            raise UnknownNameError("pool", pool, POOLS)
        if output_size is None:
            output_size = 2 if mode == "recognition" else vocab_size
        hidden_size = width
        if stack_depth == "sequence":
            stack_depth = None
        for nm, v in (("output_size", output_size), ("width", width),
                      ("stack_width", stack_width), ("n_stacks", n_stacks),
                      ("read_depth", read_depth)):
            _check_positive(nm, v)
        if stack_depth is not None:
            _check_positive("stack_depth", stack_depth, also="'sequence'")
        if embedding_dim is not None:
            _check_positive("embedding_dim", embedding_dim)
        if action_softmax not in ACTION_SOFTMAX:
            raise UnknownNameError("action_softmax", action_softmax, ACTION_SOFTMAX)
        if action_softmax != "per_stack" and stack != "superposition":
            raise InvalidParameterError(f"action_softmax={action_softmax!r} needs the "
                                        f"superposition stack, got stack={stack!r}")
        if stack == "stratification" and read_depth != 1:
            raise InvalidParameterError("read_depth must be 1 for the stratification stack "
                                        f"(it reads one vector), got {read_depth}")
        if stack_depth is not None and stack == "superposition" and read_depth > stack_depth:
            raise InvalidParameterError(
                f"read_depth ({read_depth}) must not exceed stack_depth ({stack_depth})")
        # the base class stores input_dim/output_dim/dt/time in the config: accept them back
        if input_dim is not None and input_dim != vocab_size:
            raise InvalidParameterError(f"input_dim ({input_dim}) must equal vocab_size "
                                        f"({vocab_size})")
        if output_dim is not None and output_dim != output_size:
            raise InvalidParameterError(f"output_dim ({output_dim}) must equal output_size "
                                        f"({output_size})")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidParameterError(f"seed must be an integer or None, got {seed!r}")
        if time != "discrete":
            raise InvalidParameterError(f"a stack RNN is a discrete-time model, got time={time!r}")
        ns = {} if stack != "nondeterministic" else stack_rnn_options(  # other configs unchanged
            num_states, stack_symbols, window, vector_width, stack_depth=stack_depth,
            n_stacks=n_stacks, read_depth=read_depth, compile=compile)
        cfg = dict(vocab_size=vocab_size, output_size=output_size, controller=controller,
                   stack=stack, width=width, stack_width=stack_width,
                   stack_depth=stack_depth, n_stacks=n_stacks, read_depth=read_depth,
                   mode=mode, embedding_dim=embedding_dim, pool=pool, compile=bool(compile),
                   seed=seed, **ns)
        if action_softmax != "per_stack":  # stored only when set: older configs unchanged
            cfg["action_softmax"] = action_softmax
        super().__init__(input_dim=vocab_size, output_dim=output_size, dt=dt, time="discrete",
                         dtype=dtype, device=device, config=cfg)
        self.action_softmax = action_softmax
        self.vocab_size, self.output_size, self.mode, self.pool = vocab_size, output_size, mode, pool
        self.width = width
        self.stack_kind, self.stack_depth = stack, stack_depth
        self._ns_options = ns
        if seed is None:
            self._build(controller, stack, hidden_size, stack_width, stack_depth, n_stacks,
                        read_depth, embedding_dim)
        else:
            dev = self.factory["device"]
            with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
                torch.manual_seed(seed)
                self._build(controller, stack, hidden_size, stack_width, stack_depth,
                            n_stacks, read_depth, embedding_dim)
        self.use_compile = bool(compile)
        self._compiled = CompiledStep(self._step_impl, "StackRNN") if compile else None
        #: run :meth:`forward` of an LSTM controller with a superposition stack (or none)
        #: as one autograd node (:mod:`rnnmem.models.lstm_sequence`) where it can; False:
        #: always the step-by-step graph (the same values to rounding). Not in the config.
        self.fused_sequence = True

    def _build(self, controller, stack, hidden_size, stack_width, stack_depth, n_stacks,
               read_depth, embedding_dim) -> None:
        fk = self.factory
        if stack == "superposition":
            self.memory = SuperpositionStack(stack_depth, stack_width, read_depth,
                                             n_stacks=n_stacks, hidden_size=hidden_size,
                                             action_softmax=self.action_softmax, **fk)
        elif stack == "stratification":
            self.memory = StratificationStack(stack_width, stack_depth, n_stacks=n_stacks,
                                              hidden_size=hidden_size, **fk)
        elif stack == "nondeterministic":
            self.memory = NondeterministicStack(**self._ns_options, hidden_size=hidden_size, **fk)
        else:
            self.memory = nn.Module()  # no parameters: the baseline
        self.read_size = 0 if stack == "none" else self.memory.read_size
        self.controller = Controller(controller, self.vocab_size, hidden_size, self.read_size,
                                     embedding_dim, **fk)
        self.classifier = nn.Linear(hidden_size, self.output_size, **fk)

    # ---- state ----------------------------------------------------------------------
    @property
    def has_stack(self) -> bool:
        return self.stack_kind != "none"

    def initial_state(self, batch_size: int, capacity: int | None = None) -> StackRNNState:
        """Zero controller state, empty stack, zero read.

        ``capacity`` sets the stack depth when the model was built with ``stack_depth=None``
        (:meth:`forward` passes the sequence length).
        """
        _check_positive("batch_size", batch_size)
        fk = {"dtype": self.factory["dtype"], "device": self.device}
        ctrl = self.controller.initial_state(batch_size, **fk)
        if not self.has_stack:
            return StackRNNState(ctrl, None, None)
        depth = self.stack_depth if self.stack_depth is not None else capacity
        if depth is None:
            raise InvalidParameterError("stack_depth is None: give the capacity "
                                        "(e.g. the sequence length) to initial_state")
        _check_positive("capacity", depth)
        if self.stack_kind == "superposition":
            stack = self.memory.initial_state(batch_size, depth=depth, **fk)
        elif self.stack_kind == "nondeterministic":  # depth: the number of steps it can take
            stack = self.memory.initial_state(batch_size, capacity=depth, **fk)
            return StackRNNState(ctrl, stack, self.memory.read(stack))
        else:
            stack = self.memory.initial_state(batch_size, max_depth=depth, **fk)
        return StackRNNState(ctrl, stack, torch.zeros(batch_size, self.read_size, **fk))

    def _stack_depth(self, stack) -> int:
        """Depth (capacity) of a stack state."""
        return int((stack if self.stack_kind == "superposition" else stack.values).shape[2])

    @staticmethod
    def detach_state(state: StackRNNState) -> StackRNNState:
        """The same state cut from the graph (truncated BPTT between chunks)."""
        return _tree_map(torch.Tensor.detach, state)

    def _check_state(self, state, batch_size: int) -> None:
        if not isinstance(state, StackRNNState):
            raise ShapeError(f"state must be a StackRNNState, got {type(state).__name__}")
        h = state.controller[0] if self.controller.kind == "lstm" else state.controller
        if not isinstance(h, torch.Tensor) or tuple(h.shape) != (batch_size, self.controller.hidden_size):
            raise ShapeError(f"controller state must be ({batch_size}, "
                             f"{self.controller.hidden_size}), got {tuple(getattr(h, 'shape', ()))}")
        if self.has_stack and (state.stack is None or state.read is None):
            raise ShapeError("state has no stack but the model has one")

    # ---- input ----------------------------------------------------------------------
    def _embed(self, x, time_axis: bool) -> torch.Tensor:
        """Validate ``x`` and return its input codes, ``(B, T, E)`` (or ``(B, E)``)."""
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        lead = 2 if time_axis else 1
        what = "(B, T)" if time_axis else "(B,)"
        if x.is_floating_point():
            if x.dim() != lead + 1 or x.shape[-1] != self.vocab_size:
                raise ShapeError(f"float input must be {what[:-1]}, {self.vocab_size}), "
                                 f"got {tuple(x.shape)}")
            if x.dtype != self.factory["dtype"]:
                raise InvalidParameterError(f"float input has dtype {x.dtype}, the model "
                                            f"{self.factory['dtype']}: cast it explicitly")
            if not torch.isfinite(x).all():
                raise NonFiniteError("input contains NaN or inf")
        else:
            if x.dtype == torch.bool or x.is_complex():
                raise InvalidParameterError(f"token ids must be integers, got {x.dtype}")
            if x.dim() != lead:
                raise ShapeError(f"token ids must be {what}, got shape {tuple(x.shape)}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
                bad = int(x.min()) if int(x.min()) < 0 else int(x.max())
                raise AlphabetError(f"token id {bad} outside the vocabulary "
                                    f"0..{self.vocab_size - 1}")
            x = x.long()
        if time_axis and x.shape[1] < 1:
            raise ShapeError("input has no time steps")
        return self.controller.embed(x.to(self.device), self.factory["dtype"])

    # ---- one step ---------------------------------------------------------------------
    def _step_impl(self, e_t: torch.Tensor, state: StackRNNState, grow: int | None = None,
                   interface=None):
        """``(h_t, new_state, controls)`` from input codes ``e_t`` (B, E).

        ``grow``: the stack is stored only down to its deepest possibly non-empty cell and
        grows by one cell per step up to this depth (see ``grow_step`` of the stacks).
        ``interface``: the stack's ``merged_interface()``, computed once per sequence, so
        that the action and value layers cost one matrix product per step.
        """
        if not self.has_stack:
            h, c = self.controller(e_t, state.controller)
            return h, StackRNNState(c, None, None), None
        inp = torch.cat([e_t, state.read], dim=-1)  # (B, E + R)
        h, c = self.controller(inp, state.controller)
        if interface is None:
            controls = self.memory.controls(h)
        else:
            controls = self.memory.controls_from_logits(torch.addmm(interface[1], h,
                                                                    interface[0]))
        if hasattr(self.memory, "step_read"):  # update and read as one autograd node
            stack, read = self.memory.step_read(state.stack, controls, grow)
            return h, StackRNNState(c, stack, read), controls
        if grow is None:
            stack = self.memory.step(state.stack, controls)
        else:
            stack = self.memory.grow_step(state.stack, controls, grow)
        return h, StackRNNState(c, stack, self.memory.read(stack)), controls

    @property
    def compile_failed(self) -> bool:
        """Whether ``compile=True`` fell back to eager execution."""
        return self._compiled is not None and self._compiled.failed

    def _step_fn(self):
        if self.use_compile and not self.compile_failed:
            return self._compiled
        return self._step_impl

    def step(self, x_t, state: StackRNNState | None = None):
        """One time step from token ids ``(B,)`` (or codes ``(B, vocab_size)``).

        Returns
        -------
        logits : tensor (B, output_size)
        state : :class:`StackRNNState`
        """
        e = self._embed(x_t, time_axis=False)  # (B, E)
        if state is None:
            state = self.initial_state(e.shape[0], capacity=1)
        else:
            self._check_state(state, e.shape[0])
            stack = state.stack
            if (self.stack_kind == "nondeterministic"
                    and int(stack.step) + 1 > stack.values.shape[2] - 1):  # tape full
                # room for max(16, D) more steps with a window D (the roll's copy of D
                # columns spread over as many steps), for as many again without one
                window = self.memory.window
                room = max(16, window if window is not None else int(stack.step))
                state = state._replace(stack=self.memory.extend(stack, room))
        h, state, _ = self._step_fn()(e, state)
        return self.classifier(h), state

    # ---- sequences --------------------------------------------------------------------
    def forward(self, x, state: StackRNNState | None = None, return_state: bool = False,
                record_stack: bool = False):
        """Per-step logits of a batch of sequences.

        Parameters
        ----------
        x : int tensor (B, T) of token ids, or float tensor (B, T, vocab_size)
        state : :class:`StackRNNState`, optional
            Carried from a previous chunk (truncated BPTT; detach it with
            :meth:`detach_state`). Default: :meth:`initial_state` with capacity ``T``.
        return_state : bool
            Also return the final state.
        record_stack : bool
            Also return a dict of per-step stack tensors (after each step's update):
            superposition ``{"stack": (B, T, K, D, W), "actions": (B, T, K, 3), "values":
            (B, T, K, W), "reads": (B, T, R)}``; stratification ``{"values": (B, T, K, M, W),
            "strengths": (B, T, K, M), "push": (B, T, K), "pop": (B, T, K), "pushed":
            (B, T, K, W), "reads": (B, T, R)}``; nondeterministic ``{"push": (B, T, QS, QS),
            "repl": (B, T, QS, QS), "pop": (B, T, QS, Q), "vector": (B, T, m)`` (vector
            variant) ``, "log_total": (B, T), "reads": (B, T, R)}``; an empty dict without
            stack.

        Returns
        -------
        logits : tensor (B, T, output_size), then ``state`` if ``return_state``, then the
        trace if ``record_stack`` (a tuple when more than one).
        """
        emb = self._embed(x, time_axis=True)  # (B, T, E)
        B, T = emb.shape[:2]
        # A stack created here starts empty: store it only as deep as it can be non-empty
        # and let it grow one cell per step (up to its depth), padding it back at the end.
        # Same values, work per step proportional to the steps taken so far. Not with
        # torch.compile, whose graphs are specialised to shapes.
        depth = None
        if state is None:
            state = self.initial_state(B, capacity=T)
            if self.has_stack and not self.use_compile and self.stack_kind != "nondeterministic":
                depth = self._stack_depth(state.stack)
                start = getattr(self.memory, "read_depth", 1)
                state = state._replace(stack=_tree_map(lambda v: v[:, :, :start].contiguous(),
                                                       state.stack))
        else:
            self._check_state(state, B)
            if self.stack_kind == "nondeterministic":  # room on its tape, its own backward
                state = state._replace(stack=self.memory.extend(state.stack, T))
        if self._fused_ok(emb, state, record_stack):
            return self._fused_forward(emb, state, depth, return_state)
        step = self._step_fn()
        iface = self.memory.merged_interface() if depth is not None else None
        hs, rec = [], []
        # a small loop on one thread, forward and (through the hooks of ``loop``) backward
        with step_threads(self._loop_work(B, T, state), emb.device) as loop:
            for e_t in loop.inputs(emb).unbind(1):  # unbind: no per-step zero-filled grads
                if depth is None:
                    h, state, controls = step(e_t, state)
                else:
                    h, state, controls = self._step_impl(e_t, state, depth, iface)
                hs.append(h)
                if record_stack and self.has_stack:
                    stack = (state.stack if depth is None
                             else self.memory.pad(state.stack, depth))
                    rec.append((stack, controls, state.read))
        if depth is not None:
            state = state._replace(stack=self.memory.pad(state.stack, depth))
        logits = self.classifier(loop.outputs(torch.stack(hs, dim=1)))  # (B, T, O)
        out = [logits]
        if return_state:
            out.append(state)
        if record_stack:
            out.append(self._trace(rec))
        return out[0] if len(out) == 1 else tuple(out)

    def step_work(self, batch_size: int) -> int | None:
        """The controller's gate product per step (``batch x gates x (input + hidden)``;
        the fused node counts the same); ``None`` with the nondeterministic stack, whose
        step work grows with the step (its forward counts its largest step itself)."""
        if self.stack_kind == "nondeterministic":
            return None
        return self._gate_work(batch_size)

    def _gate_work(self, batch_size: int) -> int:
        cell = self.controller.cell
        return gate_work(batch_size, cell.weight_ih, cell.hidden_size)

    def _loop_work(self, batch_size: int, steps: int, state: StackRNNState) -> int:
        """The work of the largest step of a forward loop of ``steps`` steps from ``state``:
        the controller's gate product, plus for the nondeterministic stack its last step
        (:meth:`NondeterministicStack.step_work`)."""
        work = self._gate_work(batch_size)
        if self.stack_kind == "nondeterministic":
            work += self.memory.step_work(batch_size, int(state.stack.step) + steps)
        return work

    def _fused_ok(self, emb, state: StackRNNState, record_stack: bool) -> bool:
        """Whether :meth:`forward` may run as one node (see ``fused_sequence``)."""
        cell = self.controller.cell
        if (not self.fused_sequence or record_stack or self.use_compile
                or self.controller.kind != "lstm" or cell.bias_ih is None
                or self.stack_kind not in ("none", "superposition")):
            return False
        h, c = state.controller
        return lstm_sequence.usable(emb, cell.weight_ih, cell.weight_hh, h, c,
                                    *((state.stack, state.read) if self.has_stack else ()))

    def _fused_forward(self, emb, state: StackRNNState, depth: int | None, return_state):
        """:meth:`forward` through :func:`~rnnmem.models.lstm_sequence.lstm_stack_sequence`."""
        cell = self.controller.cell
        h0, c0 = state.controller
        if self.has_stack:
            m = self.memory
            # without return_state the last stack is not an output: its cells that no
            # read reaches are left out (about half the stack work, lstm_sequence._depths)
            spec = lstm_sequence.SequenceSpec(m.n_stacks, m.read_depth, m.width, depth,
                                              m.action_softmax == "joint",
                                              final_stack=return_state)
            extra = (*m.merged_interface(), h0, c0, state.stack, state.read)
        else:
            spec = lstm_sequence.SequenceSpec(0, 1, 1, None, False)
            extra = (None, None, h0, c0, None, None)
        out = lstm_sequence.lstm_stack_sequence(spec, emb, cell.weight_ih, cell.weight_hh,
                                                cell.bias_ih, cell.bias_hh, *extra)
        hs, c = out[0], out[1]
        logits = self.classifier(hs)  # (B, T, O)
        if not return_state:
            return logits
        stack, read = (out[2], out[3]) if self.has_stack else (None, None)
        if depth is not None:
            stack = self.memory.pad(stack, depth)
        return logits, StackRNNState((hs[:, -1], c), stack, read)

    def _trace(self, rec) -> dict:
        if not rec:
            return {}
        stacks, controls, reads = zip(*rec)
        tr = {"reads": torch.stack(reads, 1)}
        if self.stack_kind == "nondeterministic":
            for name in ("push", "repl", "pop", "vector"):
                if getattr(controls[0], name) is not None:
                    tr[name] = torch.stack([getattr(c, name) for c in controls], 1)
            tr["log_total"] = torch.stack([s.log_total for s in stacks], 1)
        elif self.stack_kind == "superposition":
            tr["stack"] = torch.stack(stacks, 1)
            tr["actions"] = torch.stack([c.actions for c in controls], 1)
            tr["values"] = torch.stack([c.values for c in controls], 1)
        else:
            tr["values"] = torch.stack([s.values for s in stacks], 1)
            tr["strengths"] = torch.stack([s.strengths for s in stacks], 1)
            tr["push"] = torch.stack([c.push for c in controls], 1)
            tr["pop"] = torch.stack([c.pop for c in controls], 1)
            tr["pushed"] = torch.stack([c.value for c in controls], 1)
        return tr

    def classify(self, x, lengths=None) -> torch.Tensor:
        """One logit vector per sequence, ``(B, output_size)`` (recognition).

        ``pool="last"`` takes the logits at position ``lengths[b] - 1`` (default: ``T - 1``);
        ``pool="mean"`` averages them over positions ``< lengths[b]``. Padding after a
        sequence's end cannot change these (the network is causal).
        """
        logits = self(x)  # (B, T, O)
        B, T = logits.shape[:2]
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=logits.device)
        else:
            lengths = torch.as_tensor(lengths, device=logits.device)
            if lengths.is_floating_point() or lengths.shape != (B,):
                raise ShapeError(f"lengths must be {B} integers, got {tuple(lengths.shape)} "
                                 f"of {lengths.dtype}")
            if int(lengths.min()) < 1 or int(lengths.max()) > T:
                raise InvalidParameterError(f"lengths must lie in 1..{T}, got "
                                            f"{int(lengths.min())}..{int(lengths.max())}")
            lengths = lengths.long()
        if self.pool == "last":
            return logits[torch.arange(B, device=logits.device), lengths - 1]
        mask = (torch.arange(T, device=logits.device) < lengths[:, None]).to(logits.dtype)
        return (logits * mask[..., None]).sum(1) / lengths[:, None].to(logits.dtype)


def _baseline(name: str, controller: str):
    @register_model(name)
    class Baseline(StackRNN):
        __doc__ = (f"The memory-less {controller} baseline: :class:`StackRNN` with "
                   f"``controller={controller!r}, stack='none'`` (registered as {name!r}).")

        def __init__(self, vocab_size: int, output_size: int | None = None, **kwargs):
            for key, want in (("controller", controller), ("stack", "none")):
                got = kwargs.setdefault(key, want)
                if got != want:
                    raise InvalidParameterError(f"model {name!r} has {key}={want!r}, got {got!r}")
            super().__init__(vocab_size, output_size, **kwargs)

    Baseline.__name__ = Baseline.__qualname__ = f"{controller.upper()}Baseline"
    return Baseline


SRNNBaseline = _baseline("srnn_baseline", "srnn")
LSTMBaseline = _baseline("lstm_baseline", "lstm")
GRUBaseline = _baseline("gru_baseline", "gru")
