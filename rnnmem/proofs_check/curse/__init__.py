"""Claims of the curse of memory, measured on trained models and on the linear construction
(one module per claim; :mod:`.common` holds the rows, sizes and helpers they share).

* ``approximation-rate`` (:mod:`.rate`; Li, Han, E & Li, ICLR 2021)
* ``curse-of-memory-table`` (:mod:`.table`; Wang, Li & Li, ICLR 2024; StableSSM, ICML 2024)
* ``activations-no-relief`` (:mod:`.activations`; Wang, Li & Li, ICLR 2024)
* ``inverse-approximation`` (:mod:`.inverse`; Wang, Li & Li, ICLR 2024, Thm. 3.9)
* ``curse-of-memory-protocols`` (:mod:`.protocol_table`) on the protocols ``com-original``,
  ``com-ssm-2023-09``, ``paper`` (:mod:`.protocols`; the
  seed table under each protocol; ``rnnmem ablate``: :mod:`.ablation`)
* ``stable-reparam-lr-robustness`` (:mod:`.lr`; StableSSM, Thm. 3.6 and Table 2)

Each claim that trains reads the runs of its protocol (registered under the claim's id,
``rnnmem protocols``) from the run store; nothing is cached in these modules.
"""

from . import rate as rate  # noqa: F401  (import order = report order)
from . import table as table  # noqa: F401
from . import activations as activations  # noqa: F401
from . import inverse as inverse  # noqa: F401
from . import lr as lr  # noqa: F401
from . import protocols as protocols  # noqa: F401
from . import protocol_table as protocol_table  # noqa: F401
