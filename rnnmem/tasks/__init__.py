"""Data and the one task interface and registry: linear-functional targets, teacher models,
formal languages, Penn Treebank.

Data modules (numpy): :mod:`.functional`, :mod:`.teacher`, :mod:`.datasets` (named data
sets), :mod:`.languages`, :mod:`.ptb`. The task interface (torch) is
:mod:`.interface`, the registry :mod:`.registry` (``build_task``, ``task_names``), and
each adapter sits next to its data: :mod:`.arrays`, :mod:`.lf`, :mod:`.language_task`,
:mod:`.ptb_task`. Implementation modules are re-exported here (``X as X``); the torch-side
names (``Task``, ``ArrayRegressionTask``, ...) are resolved on first use, so that
importing the data modules stays free of torch.
"""

import importlib

from .datasets import (
    FUNCTIONAL_TASKS as FUNCTIONAL_TASKS,
    TaskSpec as TaskSpec,
    get_task as get_task,
)
from .functional import (
    INPUT_KINDS as INPUT_KINDS,
    METHODS as METHODS,
    KernelWeights as KernelWeights,
    LinearFunctionalTask as LinearFunctionalTask,
    SequenceDataset as SequenceDataset,
    apply_linear_functional as apply_linear_functional,
    causal_convolve_direct as causal_convolve_direct,
    causal_convolve_fft as causal_convolve_fft,
    kernel_weights as kernel_weights,
    make_linear_functional_dataset as make_linear_functional_dataset,
    sample_inputs as sample_inputs,
)
from .registry import (
    TASK_BUILDERS as TASK_BUILDERS,
    TASK_PREFIXES as TASK_PREFIXES,
    build_task as build_task,
    register_task as register_task,
    register_task_prefix as register_task_prefix,
    task_names as task_names,
)
from .teacher import (
    TEACHER_KINDS as TEACHER_KINDS,
    TEACHER_MEMORIES as TEACHER_MEMORIES,
    TeacherRNN as TeacherRNN,
    make_teacher as make_teacher,
    make_teacher_dataset as make_teacher_dataset,
    random_hurwitz as random_hurwitz,
)

try:  # formal languages live in a sibling module that may not exist in every checkout
    from .languages import LANGUAGES as LANGUAGES, get_language as get_language
except ModuleNotFoundError as _exc:  # only a missing module is tolerated
    if _exc.name != f"{__name__}.languages":
        raise

#: torch-side public names -> their module (imported on first use)
_LAZY = {"Task": "interface", "TrainTask": "interface", "ArrayRegressionTask": "arrays",
         "FunctionalTask": "lf", "LanguageTask": "language_task", "PTBTask": "ptb_task"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
from .transductions import (TRANSDUCTIONS as TRANSDUCTIONS, Transduction as Transduction,
                            get_transduction as get_transduction)
from .dusell import CFL_TASKS as CFL_TASKS, get_cfl_task as get_cfl_task
