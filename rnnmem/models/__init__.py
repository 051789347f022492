"""Trainable recurrent models (torch): parameterised layers, RNNs, SSMs, LRU, stacks.

Importing this package imports torch. Models register themselves by name in
:data:`MODELS`; :func:`load` rebuilds one from a checkpoint.
"""

from .base import RecurrentModel as RecurrentModel
from .curse_original import ComDiagonalRNN as ComDiagonalRNN, ComLRU as ComLRU
from .curse_original import ComRNN as ComRNN, ComSSM as ComSSM, CurseModel as CurseModel
from .diagonal import DiagonalSSM as DiagonalSSM
from .diagonal import diagonal_memory_function as diagonal_memory_function
from .freezing import apply_freeze as apply_freeze, trainable_parameters as trainable_parameters
from .lru import LRU as LRU
from .nondeterministic import NondeterministicStack as NondeterministicStack
from .recurrence import linear_recurrence as linear_recurrence
from .rnn import NonlinearRNN as NonlinearRNN
from .s4d import S4D as S4D, S4DKernel as S4DKernel
from .ssm import NonlinearSSM as NonlinearSSM, StableSSM as StableSSM
from .stack_rnn import StackRNN as StackRNN
from .stacks import SuperpositionStack as SuperpositionStack
from .stacks import StratificationStack as StratificationStack
from .registry import (
    MODELS as MODELS,
    build_model as build_model,
    load as load,
    load_checkpoint as load_checkpoint,
    register_model as register_model,
    save_checkpoint as save_checkpoint,
)
