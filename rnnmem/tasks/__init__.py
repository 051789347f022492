"""Data: linear-functional targets, teacher models, formal languages.

Implementation modules are private to their concerns and re-exported here (``X as X``).
"""

from .functional import (
    FUNCTIONAL_TASKS as FUNCTIONAL_TASKS,
    INPUT_KINDS as INPUT_KINDS,
    METHODS as METHODS,
    KernelWeights as KernelWeights,
    LinearFunctionalTask as LinearFunctionalTask,
    SequenceDataset as SequenceDataset,
    TaskSpec as TaskSpec,
    apply_linear_functional as apply_linear_functional,
    causal_convolve_direct as causal_convolve_direct,
    causal_convolve_fft as causal_convolve_fft,
    get_task as get_task,
    kernel_weights as kernel_weights,
    make_linear_functional_dataset as make_linear_functional_dataset,
    sample_inputs as sample_inputs,
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

from .transductions import (TRANSDUCTIONS as TRANSDUCTIONS, Transduction as Transduction,
                            get_transduction as get_transduction)
from .dusell import CFL_TASKS as CFL_TASKS, get_cfl_task as get_cfl_task
