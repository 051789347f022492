"""Trainable recurrent models (torch): parameterised layers, RNNs, SSMs, LRU, stacks.

Importing this package imports torch. Models register themselves by name in
:data:`MODELS`; :func:`load` rebuilds one from a checkpoint.
"""

from .base import RecurrentModel as RecurrentModel
from .diagonal import DiagonalSSM as DiagonalSSM
from .diagonal import diagonal_memory_function as diagonal_memory_function
from .recurrence import linear_recurrence as linear_recurrence
from .registry import (
    MODELS as MODELS,
    build_model as build_model,
    load as load,
    load_checkpoint as load_checkpoint,
    register_model as register_model,
    save_checkpoint as save_checkpoint,
)
