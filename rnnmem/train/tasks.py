"""Training tasks: re-exported from :mod:`rnnmem.tasks`, where the task interface
(:mod:`rnnmem.tasks.interface`), the registry (:mod:`rnnmem.tasks.registry`) and every
adapter (next to its data) now live. Kept so that ``rnnmem.train.build_task`` and
``from rnnmem.train.tasks import ...`` keep working.
"""

from ..tasks.arrays import ArrayRegressionTask as ArrayRegressionTask
from ..tasks.interface import TEST as TEST
from ..tasks.interface import TRAIN as TRAIN
from ..tasks.interface import VALID as VALID
from ..tasks.interface import Task as Task
from ..tasks.interface import TrainTask as TrainTask
from ..tasks.interface import numpy_rng_from as numpy_rng_from
from ..tasks.interface import temporal_weights as temporal_weights
from ..tasks.interface import weighted_mse as weighted_mse
from ..tasks.language_task import LanguageTask as LanguageTask
from ..tasks.registry import TASK_BUILDERS as TASK_BUILDERS
from ..tasks.registry import TASK_PREFIXES as TASK_PREFIXES
from ..tasks.registry import build_task as build_task
from ..tasks.registry import check_options as check_options
from ..tasks.registry import register_task as register_task
from ..tasks.registry import register_task_prefix as register_task_prefix
from ..tasks.registry import task_names as task_names

_check_options = check_options  # the old private name, used by adapters on other branches

__all__ = ["Task", "TrainTask", "ArrayRegressionTask", "LanguageTask", "TASK_BUILDERS",
           "TASK_PREFIXES", "register_task", "register_task_prefix", "build_task",
           "task_names", "check_options", "temporal_weights", "weighted_mse",
           "numpy_rng_from", "TRAIN", "VALID", "TEST"]
