"""Protocol: grid expansion, budgets, ablations, TOML round trip and errors with lines."""

import pytest

from exp_helpers import tiny_run
from rnnmem.errors import InvalidParameterError, UnknownNameError
from rnnmem.experiments import Protocol, get_protocol, load_protocol, protocol_names


def test_grid_is_the_cartesian_product_first_axis_slowest():
    p = Protocol("g", tiny_run(), grid={"model.width": [2, 3], "seed": [0, 1, 2]})
    runs = p.runs()
    assert [(r.get("model.width"), r.seed) for r in runs] == \
        [(2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)]
    assert len({r.hash for r in runs}) == 6 and p.axes() == ["model.width", "seed"]


def test_repeated_runs_are_kept_once():
    p = Protocol("g", tiny_run(), grid={"seed": [0, 0, 1]})
    assert len(p.runs()) == 2


def test_budgets_set_fields_and_replace_axes(tiny_protocol):
    assert len(tiny_protocol.runs()) == 2  # the default budget: smoke
    q = tiny_protocol.at("quick")
    assert q.budget == "quick" and len(q.runs()) == 3
    assert {r.config.steps for r in q.runs()} == {12}
    assert {r.config.steps for r in tiny_protocol.runs()} == {8}
    with pytest.raises(UnknownNameError, match="medium"):
        tiny_protocol.at("medium")


def test_more_budgets_than_the_standard_three():
    p = Protocol("m", tiny_run(), grid={"seed": [0]},
                 budgets={"medium": {"set": {"train.steps": 10}}})
    assert p.at("medium").runs()[0].config.steps == 10


def test_vary_one_factor(tiny_protocol):
    ab = tiny_protocol.vary(train__lr=[0.01, 0.1])
    assert ab.axes() == ["seed", "train.lr"] and len(ab.runs()) == 4
    assert "train.lr" in ab.name
    tanh = tiny_protocol.vary(**{"model.activation": "tanh"})
    assert {r.get("model.activation") for r in tanh.runs()} == {"tanh"}
    # the runs of the ablation that equal the original's are the same runs (shared store)
    base = {r.hash for r in tiny_protocol.runs()}
    assert base <= {r.hash for r in ab.runs()}


def test_bad_axis_fails_at_construction():
    with pytest.raises(InvalidParameterError, match="grid.train.lrr"):
        Protocol("x", tiny_run(), grid={"train.lrr": [1.0]})
    with pytest.raises(InvalidParameterError, match="list of values"):
        Protocol("x", tiny_run(), grid={"seed": 3})


def test_toml_round_trip(tiny_protocol):
    back = Protocol.from_toml(tiny_protocol.to_toml())
    assert [r.hash for r in back.runs()] == [r.hash for r in tiny_protocol.runs()]
    assert [r.hash for r in back.at("quick").runs()] == \
        [r.hash for r in tiny_protocol.at("quick").runs()]
    # a protocol at a budget is written with the budget applied
    q = Protocol.from_toml(tiny_protocol.at("quick").to_toml())
    assert [r.hash for r in q.runs()] == [r.hash for r in tiny_protocol.at("quick").runs()]


_GOOD = '''name = "file"
analysis = "summary"
default_budget = "smoke"

[run]
seed = 0
[run.model]
name = "rnn"
width = 3
[run.task]
name = "lf:exponential"
length = 12
[run.train]
steps = 5
dtype = "float64"

[grid]
"model.width" = [2, 3]
seed = [0, 1]

[budgets.smoke]
[budgets.full.set]
"train.steps" = 50
'''


def _error(text, tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(InvalidParameterError) as info:
        load_protocol(f)
    return str(info.value)


def test_file_loads(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(_GOOD)
    p = load_protocol(f)
    assert len(p.runs()) == 4 and p.at("full").runs()[0].config.steps == 50


@pytest.mark.parametrize("old, new, line, named", [
    ("steps = 5", "stepz = 5", 14, "run.train.stepz"),
    ('analysis = "summary"', 'analysys = "summary"', 2, "analysys"),
    ("seed = [0, 1]", "seed = 1", 19, "grid.seed"),
    ('"train.steps" = 50', '"train.step" = 50', 23, "train.step"),
    ('width = 3\n', 'hiden_dim = 3\n', 9, "hiden_dim"),
    ('"model.width" = [2, 3]', '"model.width" = [2, -3]', 18, "model"),
])
def test_file_errors_name_the_line(tmp_path, old, new, line, named):
    assert old in _GOOD
    msg = _error(_GOOD.replace(old, new, 1), tmp_path)
    assert f"p.toml:{line}:" in msg, msg
    assert named in msg, msg


def test_not_toml(tmp_path):
    assert "not valid TOML" in _error("name = [", tmp_path)


def test_builtins_are_listed_and_load():
    assert "smoke-sweep" in protocol_names()
    p = get_protocol("smoke-sweep")
    runs = p.runs()
    assert len(runs) >= 6 and len({r.model for r in runs}) >= 2
    assert Protocol.from_toml(p.to_toml()).name == "smoke-sweep"
    with pytest.raises(UnknownNameError):
        get_protocol("no-such-protocol")


def test_joint_axis_sets_its_fields_together_and_round_trips():
    """A joint axis ("a+b") is one axis: its values are taken together, not crossed."""
    from rnnmem.experiments import Protocol, Run

    base = Run.make({"name": "rnn", "width": 4, "activation": "linear",
                     "recurrence": "diagonal"}, {"name": "lf:exponential", "length": 10},
                    train={"steps": 2})
    pairs = [[{"name": "rnn", "activation": "tanh", "recurrence": "diagonal"}, "lf:polynomial"],
             [{"name": "diagonal_ssm", "parameterisation": "softplus"}, "lf:exponential"]]
    p = Protocol("joint", base, grid=[("model+task.name", pairs), ("model.width", [2, 4])])
    runs = p.runs()
    assert [(r.model, r.task, r.model_options["width"]) for r in runs] == [
        ("rnn", "lf:polynomial", 2), ("rnn", "lf:polynomial", 4),
        ("diagonal_ssm", "lf:exponential", 2), ("diagonal_ssm", "lf:exponential", 4)]
    assert runs[0].model_options["activation"] == "tanh"
    q = Protocol.from_toml(p.to_toml())
    assert [r.hash for r in q.runs()] == [r.hash for r in runs]
    with pytest.raises(InvalidParameterError, match="joint axis of 2 fields"):
        Protocol("bad", base, grid={"model.width+seed": [[2, 0], [4]]})
