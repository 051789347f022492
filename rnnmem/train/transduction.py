"""The ``dm:<name>`` transduction task lives next to its data, in
:mod:`rnnmem.tasks.transduction_task`; these names are re-exported for the evaluation
protocols of :mod:`rnnmem.train.length_protocols`."""

from ..tasks.transduction_task import DEFAULT_TRAIN_LENGTHS as DEFAULT_TRAIN_LENGTHS
from ..tasks.transduction_task import TransductionTask as TransductionTask
from ..tasks.transduction_task import tape as tape
from ..tasks.transduction_task import transduction_lengths as transduction_lengths
