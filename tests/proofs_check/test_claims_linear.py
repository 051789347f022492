"""The foundation claims hold at the smoke budget (they are identities: must hold)."""

import pytest

from rnnmem.proofs_check import run_claims


@pytest.mark.parametrize("cid", ["linear-memory-agreement", "parameterisation-stability",
                                 "best-parameterisation"])
def test_foundation_claim_confirmed(cid, tmp_path):
    (res,) = run_claims([cid], "smoke", tmp_path)
    assert res.error is None, res.error
    assert res.verdict == "confirmed", res.summary
    assert res.must_hold
    for fig in res.figures:
        assert (tmp_path / fig).stat().st_size > 1000
