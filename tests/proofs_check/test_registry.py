import json

import pytest

from rnnmem.errors import InvalidParameterError
from rnnmem.proofs_check import registry as R
from rnnmem.proofs_check.report import write_report


@pytest.fixture
def temp_claims(monkeypatch):
    saved = dict(R._REGISTRY)
    yield
    R._REGISTRY.clear()
    R._REGISTRY.update(saved)


def test_evidence_rejects_bad_verdict():
    with pytest.raises(InvalidParameterError):
        R.Evidence("maybe")


def test_crash_is_reported_and_fails_must_hold(tmp_path, temp_claims):
    R._load()

    @R.claim("t-crash", title="t", statement="s", source="test", must_hold=True)
    def _c(ctx):
        raise RuntimeError("boom")

    @R.claim("t-ok", title="t", statement="s", source="test")
    def _o(ctx):
        return R.Evidence("refuted", summary="measured", metrics={"x": float("nan")})

    res = R.run_claims(["t-crash", "t-ok"], "smoke", tmp_path)
    assert res[0].verdict == "error" and res[0].errored and res[0].failed_must_hold
    assert "boom" in res[0].error
    assert res[1].verdict == "refuted" and not res[1].failed_must_hold
    _, rj = write_report(res, tmp_path, budget="smoke")
    data = json.loads(rj.read_text())
    assert data[1]["metrics"]["x"] is None  # JSON has no NaN: null (rnnmem.files.to_jsonable)


def test_bad_budget(tmp_path):
    with pytest.raises(InvalidParameterError):
        R.run_claims([], "enormous", tmp_path)
