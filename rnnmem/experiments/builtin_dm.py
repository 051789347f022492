r"""The length-generalisation protocols of the field: ``dm`` and ``ns``.

``dm``
    Delétang et al. (2023), "Neural Networks and the Chomsky Hierarchy", ICLR
    (google-deepmind/neural_networks_chomsky_hierarchy): stack RNNs (LSTM controller)
    trained on the deterministic-context-free transductions ``dm:reverse_string``,
    ``dm:stack_manipulation``, ``dm:modular_arithmetic_brackets``, ``dm:solve_equation``
    on lengths uniform in 1..40, then scored on **every** length 41..N with k strings each
    by masked per-token accuracy (``evaluate.dm``: per-length curves with 95% bands, the
    score = mean over test lengths, the same on the training lengths 1..40 and the
    retained ratio score(test) / score(train) of Das & Mali 2024), at the sequence-length
    stack depth and DeepMind's fixed depth 30 (the nondeterministic stack has no depth to
    fix: sequence only). Grid: task x memory x freezing mode x training stack depth x
    seed, the memory, freezing mode and training depth one joint axis
    ``model.stack+train.freeze+model.stack_depth`` (a memory-less model has no memory to
    freeze; the superposition and stratification stacks are trained both at the sequence
    length, ``"sequence"``, and at DeepMind's fixed depth 30, the depth DeepMind trains at,
    so that training depth and test depth are separate factors; :data:`DM_CELLS`):

    ====================  =======================================  ================
    memory                freezing modes                           training depth
    ====================  =======================================  ================
    none                  none                                     (no stack)
    superposition         none, memory (Joulin & Mikolov 2015;     sequence, 30
                          Das & Mali 2024)
    stratification        none, memory (Grefenstette et al. 2015)  sequence, 30
    nondeterministic      none, memory (DuSell & Chiang            sequence
                          2020/2022, RNS-RNN)
    ====================  =======================================  ================

``ns``
    DuSell & Chiang (2022), ICLR: the same models trained as language models on
    ``ns:marked_reversal``, ``ns:unmarked_reversal``, ``ns:padded_reversal``, ``ns:dyck``,
    ``ns:hardest_cfl`` (training lengths 40..80, the tasks' default), scored by the
    cross-entropy above the exact per-length lower bound on the test lengths 40..100
    (``evaluate.ns``); stacks at the sequence length (DuSell & Chiang fix no depth), so
    its joint axis is ``model.stack+train.freeze`` over :data:`MEMORY_CELLS`.

Budgets (:data:`DM_SIZES`, :data:`NS_SIZES`): ``smoke`` (the machinery, seconds; one task),
``quick`` (minutes), ``medium`` (at most 60 minutes on 2 CPU cores with ``--jobs 2``,
sized from timed runs: see :data:`MEDIUM_NOTE`), ``full`` (DeepMind's test range 41..500
and k = 512, DeepMind-sized models; for an accelerator).
"""

from __future__ import annotations

from .protocol import Protocol
from .run import Run

__all__ = ["dm_protocol", "ns_protocol", "DCF_TASKS", "NS_TASKS", "MEMORY_CELLS",
           "DM_CELLS", "DM_AXIS", "TRAIN_DEPTHS", "DM_SIZES", "NS_SIZES", "MEDIUM_NOTE"]

#: DeepMind's deterministic-context-free transductions
DCF_TASKS = ("reverse_string", "stack_manipulation", "modular_arithmetic_brackets",
             "solve_equation")
#: DuSell & Chiang's context-free language-modelling tasks
NS_TASKS = ("marked_reversal", "unmarked_reversal", "padded_reversal", "dyck", "hardest_cfl")
#: the joint ``model.stack + train.freeze`` cells (memory x freezing mode)
MEMORY_CELLS = (("none", "none"),
                ("superposition", "none"), ("superposition", "memory"),
                ("stratification", "none"), ("stratification", "memory"),
                ("nondeterministic", "none"), ("nondeterministic", "memory"))
_AXIS = "model.stack+train.freeze"
#: the stack depths ``dm`` trains at: the sequence length and DeepMind's fixed 30
#: (Deletang et al. 2023, their stack RNN's default stack size, used in training and test)
TRAIN_DEPTHS = ("sequence", 30)
#: the joint ``model.stack + train.freeze + model.stack_depth`` cells of ``dm``: every
#: memory x freezing cell at every training depth where the memory has a depth to fix
DM_CELLS = tuple((m, f, d) for m, f in MEMORY_CELLS
                 for d in (TRAIN_DEPTHS if m in ("superposition", "stratification")
                           else ("sequence",)))
DM_AXIS = "model.stack+train.freeze+model.stack_depth"

#: budget -> sizes of ``dm``: tasks, seeds, training (steps, batch, lr), model (width,
#: stack_width), evaluation (N = last test length, k strings per length)
DM_SIZES = {
    "smoke": dict(tasks=("reverse_string",), seeds=(0,), steps=2, batch_size=4, lr=1e-2,
                  width=4, stack_width=2, N=42, k=2, train_lengths="1:3", valid_size=2),
    "quick": dict(tasks=DCF_TASKS, seeds=(0,), steps=100, batch_size=32, lr=1e-2,
                  width=16, stack_width=4, N=60, k=16, train_lengths="1:40"),
    "medium": dict(tasks=DCF_TASKS, seeds=(0,), steps=1000, batch_size=32, lr=1e-2,
                   width=32, stack_width=4, N=100, k=32, train_lengths="1:40"),
    "full": dict(tasks=DCF_TASKS, seeds=tuple(range(10)), steps=1_000_000, batch_size=128,
                 lr=1e-3, width=256, stack_width=8, N=500, k=512, train_lengths="1:40"),
}
#: budget -> sizes of ``ns`` (N unused: the tasks' own test range 40..100)
NS_SIZES = {
    "smoke": dict(tasks=("marked_reversal",), seeds=(0,), steps=2, batch_size=4, lr=1e-2,
                  width=4, stack_width=2, lengths="40:41", k=2, valid_size=2),
    "quick": dict(tasks=NS_TASKS, seeds=(0,), steps=100, batch_size=32, lr=1e-2,
                  width=16, stack_width=4, lengths="test", k=16),
    "medium": dict(tasks=NS_TASKS, seeds=(0,), steps=600, batch_size=32, lr=1e-2,
                   width=32, stack_width=4, lengths="test", k=32),
    "full": dict(tasks=NS_TASKS, seeds=tuple(range(10)), steps=100_000, batch_size=32,
                 lr=5e-3, width=20, stack_width=3, lengths="test", k=512),
}
#: how ``medium`` was sized (timed runs on 2 shared cores, ``--jobs 2``)
MEDIUM_NOTE = (
    "dm medium (first 28 runs, 1 seed) estimated at about 35 minutes on 2 CPU cores with "
    "--jobs 2, from timed runs: the whole quick budget took 206 s wall; per training step (batch 32, "
    "two jobs) the nondeterministic stack took 0.41 s (reverse_string), 0.37 s "
    "(stack_manipulation), 0.19-0.20 s (modular_arithmetic_brackets, solve_equation), "
    "the other memories 0.02-0.05 s; evaluating lengths 41..100 with k=32 took 101 s "
    "(nondeterministic, reverse_string) and 14 s (nondeterministic, solve_equation), a few "
    "seconds for the others. 1000 steps: about 2340 + 460 s of nondeterministic runs and "
    "980 s of the others, 3780 job-seconds, 32-36 minutes on two jobs; a second seed would "
    "not fit in 60 minutes. Checked on the medium configuration itself (reverse_string, "
    "200 steps, two jobs): nondeterministic 0.33 s per step and 69 s of evaluation, "
    "superposition 0.072 s per step and 9 s, giving 3850 job-seconds, about 32 minutes. "
    "The nondeterministic stack is about 60% of the cost (cubic in "
    "the tape length). ns medium (35 runs, 600 steps): estimated about 30 minutes from "
    "one timed nondeterministic run on marked_reversal (0.49 s per step, one job; 7.5 s to "
    "evaluate lengths 40..100 with k=32) and a superposition run (0.085 s per step). "
    "dm medium was then run whole: 28 runs in 46.5 minutes with --jobs 2 (contended). "
    "Training at depth 30 as well adds 16 runs (superposition and stratification, each "
    "trained and frozen, on 4 tasks): measured at medium alone, 348 s with --jobs 2 "
    "(16-87 s each, evaluation included), so about 52 minutes for the 44 runs (the whole "
    "not run in one go).")


def _model(stack: str, width: int, stack_width: int) -> dict:
    return {"name": "stack_rnn", "controller": "lstm", "stack": stack, "width": width,
            "stack_width": stack_width}


def _train(sz: dict) -> dict:
    return {"steps": sz["steps"], "batch_size": sz["batch_size"], "lr": sz["lr"],
            "grad_clip": 1.0, "dtype": "float32", "device": "cpu", "eval_every": 0,
            "checkpoint_every": 0, "freeze": "none", "threads": 1}


def _sets(sz: dict, evaluation: dict) -> dict:
    out = {"train.steps": sz["steps"], "train.batch_size": sz["batch_size"],
           "train.lr": sz["lr"], "model.width": sz["width"],
           "model.stack_width": sz["stack_width"], "task.valid_size": sz.get("valid_size", 64)}
    out.update({f"evaluate.{k}": v for k, v in evaluation.items()})
    return out


def _dm_eval(sz: dict) -> dict:
    return {"dm.lengths": f"41:{sz['N']}", "dm.k": sz["k"],
            "dm.train_lengths": sz["train_lengths"]}


def _ns_eval(sz: dict) -> dict:
    return {"ns.lengths": sz["lengths"], "ns.k": sz["k"]}


def _protocol(name, family, sizes, evaluation, evaluate_table, description, axis=_AXIS,
              cells=MEMORY_CELLS) -> Protocol:
    q = sizes["quick"]
    base = Run.make(_model("superposition", q["width"], q["stack_width"]),
                    {"name": f"{family}:{q['tasks'][0]}", "valid_size": 64}, seed=0,
                    train=_train(q), evaluate=evaluate_table(q), resources={"num_cpus": 1})

    def grid(sz):
        return {"task.name": [f"{family}:{t}" for t in sz["tasks"]],
                axis: [list(c) for c in cells], "seed": list(sz["seeds"])}

    budgets = {b: {"set": _sets(sz, evaluation(sz)), "grid": grid(sz)}
               for b, sz in sizes.items()}
    return Protocol(name, base, grid=list(grid(q).items()), budgets=budgets,
                    default_budget="quick", analysis="summary", description=description)


def dm_protocol() -> Protocol:
    """DeepMind's protocol on the DCF transductions (see the module docstring)."""
    return _protocol(
        "dm", "dm", DM_SIZES, _dm_eval,
        lambda sz: {"dm": {"lengths": f"41:{sz['N']}", "k": sz["k"],
                           "train_lengths": sz["train_lengths"]}},
        "stack RNNs on DeepMind's DCF transductions: train 1..40, per-token masked "
        "accuracy at every length 41..N (k strings each), stack depth = sequence and 30 "
        "in training and in test; task x memory x freezing mode x training depth x seed "
        "(Deletang et al. 2023)", axis=DM_AXIS, cells=DM_CELLS)


def ns_protocol() -> Protocol:
    """DuSell & Chiang's protocol on their CFL tasks (see the module docstring)."""
    return _protocol(
        "ns", "ns", NS_SIZES, _ns_eval,
        lambda sz: {"ns": {"lengths": sz["lengths"], "k": sz["k"]}},
        "stack RNNs as language models on DuSell & Chiang's CFL tasks: cross-entropy above "
        "the per-length lower bound, test lengths 40..100; task x memory x freezing mode x "
        "seed (DuSell & Chiang 2022)")
