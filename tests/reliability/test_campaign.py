"""The issue-13 campaign as tests: every named bad input gives one named line (exit 2) or
the right answer; no traceback, no silent acceptance (see campaign.py for the classes)."""

import pytest

from campaign import api_cases, classify_api, classify_cli, cli_cases, run_api, run_cli

_DUMMY = {k: f"<{k}>" for k in ("root", "ckpt", "lang", "empty", "text", "truncated",
                                "flip_tensor", "flip_rng", "dir", "file", "lastdir",
                                "run_flip_rng")}
CLI_IDS = [c[0] for c in cli_cases(_DUMMY)]
API_IDS = [c[0] for c in api_cases()]


@pytest.mark.parametrize("case", CLI_IDS)
def test_cli_case(fx, case):
    _, argv, expect = next(c for c in cli_cases(fx) if c[0] == case)
    rc, out, err, escaped = run_cli(argv)
    kind = classify_cli(argv, expect, rc, err, escaped)
    assert kind == "clean", f"{kind}: rc={rc} {escaped or err}"
    if rc == 2:
        assert "[:200]" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", API_IDS)
def test_api_case(case):
    _, thunk, expect = next(c for c in api_cases() if c[0] == case)
    outcome, text = run_api(thunk)
    assert classify_api(expect, outcome) == "clean", f"{outcome}: {text}"
