"""One intra-op thread for the claims' step-by-step recurrences."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def one_thread():
    """Run the block with :func:`torch.set_num_threads` (1), restored afterwards.

    Tiny sequential models are made of many small operations; waking a second thread for
    each costs more than it saves (``benchmarks``, sections c and e).
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
