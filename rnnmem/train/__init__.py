"""The one training loop: configuration, checkpoints, resume, progress, logs.

The task names (``TrainTask``, ``build_task``, ``register_task``, ...) are re-exported from
:mod:`rnnmem.tasks`, where the task interface and registry live.

``train(TrainConfig(model="diagonal_ssm", task="lf:exponential", steps=500, out_dir="run"))``
trains a registered model on a registered task; ``train(config, resume=True)`` continues
from ``run/last.pt`` to the same result as an uninterrupted run.

Names: ``rnnmem.train`` is this subpackage, whatever was imported first; the function is
``rnnmem.train.train``, also exported as ``rnnmem.fit`` (and ``rnnmem.train.fit``). Calling
the subpackage, ``rnnmem.train(config, ...)``, calls the function, so code written for either
reading works.
"""

import sys as _sys
import types as _types

from .config import TrainConfig as TrainConfig
from .loop import LRSchedule as LRSchedule
from .loop import TrainResult as TrainResult
from .loop import load_train_state as load_train_state
from .loop import train as train
from .evaluate import LengthReport as LengthReport
from .evaluate import aggregate_seeds as aggregate_seeds
from .evaluate import evaluate_lengths as evaluate_lengths
from .evaluate import model_in_dtype as model_in_dtype
from .evaluate import stack_drift as stack_drift
from .lm import PTBTask as PTBTask
from .lm import ptb_config as ptb_config
from .perturb import EvalSet as EvalSet
from .perturb import eval_set_from_checkpoint as eval_set_from_checkpoint
from .perturb import perturbation_curve as perturbation_curve
from .tasks import TASK_BUILDERS as TASK_BUILDERS
from .tasks import ArrayRegressionTask as ArrayRegressionTask
from .tasks import TrainTask as TrainTask
from .tasks import build_task as build_task
from .tasks import register_task as register_task
from .tasks import register_task_prefix as register_task_prefix
from .tasks import task_names as task_names
from .tasks import temporal_weights as temporal_weights
from .tasks import weighted_mse as weighted_mse
from .transduction import TransductionTask as TransductionTask  # registers "dm:<name>"
from .length_protocols import DMReport as DMReport
from .length_protocols import evaluate_dm as evaluate_dm
from .length_protocols import evaluate_dm_depths as evaluate_dm_depths
from .length_protocols_ns import CFLLanguageModelTask as CFLLanguageModelTask  # "ns:<name>"
from .length_protocols_ns import NSReport as NSReport
from .length_protocols_ns import evaluate_ns as evaluate_ns

fit = train


class _CallableModule(_types.ModuleType):
    """This subpackage, callable as the training function (``rnnmem.train(config)``)."""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule

__all__ = ["TrainConfig", "TrainResult", "LRSchedule", "train", "fit", "load_train_state",
           "TrainTask", "ArrayRegressionTask", "TASK_BUILDERS", "build_task", "register_task",
           "register_task_prefix", "task_names", "temporal_weights", "weighted_mse", "PTBTask",
           "ptb_config", "EvalSet", "eval_set_from_checkpoint", "perturbation_curve",
           "LengthReport", "aggregate_seeds", "evaluate_lengths", "model_in_dtype", "stack_drift",
           "TransductionTask", "DMReport", "evaluate_dm", "evaluate_dm_depths",
           "CFLLanguageModelTask", "NSReport", "evaluate_ns"]
