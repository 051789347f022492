"""The researcher's own model on the command line: ``--model pkg.module:factory`` or
``--model path/file.py:Name``, ``--weights``, ``--model-arg``, ``--layout``, ``--readout``.

The factory (a function or a class) is called with the ``--model-arg`` values and must
return an ``nn.Module``; ``--weights`` is a state dict saved with ``torch.save`` (read with
``torch.load(..., weights_only=True)``: no pickled code runs) or a ``.safetensors`` file,
loaded strictly. Every failure is a :class:`rnnmem.errors.RnnmemError` with one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

from ..errors import CheckpointError, InvalidParameterError

SPEC_HELP = "pkg.module:factory or path/file.py:Name"


def add_user_model_arguments(p) -> None:
    g = p.add_argument_group("your own model (instead of an rnnmem checkpoint)")
    g.add_argument("--model", dest="user_model", metavar="SPEC",
                   help=f"{SPEC_HELP}: a factory or class returning an nn.Module")
    g.add_argument("--weights", metavar="FILE",
                   help="state dict for --model (torch.save'd, loaded weights_only; or "
                        ".safetensors)")
    g.add_argument("--model-arg", dest="model_arg", action="append", default=[],
                   metavar="K=V", help="argument of the factory, repeatable")
    g.add_argument("--layout", metavar="{BTD,TBD}",
                   help="input layout of --model (default: batch_first of nn.RNN/GRU/LSTM, "
                        "else BTD)")
    g.add_argument("--readout", metavar="INDEX|ATTR",
                   help="tuple output index, or the name of a submodule of the model applied "
                        "to its output (e.g. head)")


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:200]}"


def resolve_factory(spec: str):
    """The callable named by ``spec``."""
    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise InvalidParameterError(f"--model: expected {SPEC_HELP}, got {spec!r}")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise InvalidParameterError(f"--model: no such file {where!r}")
        mod_name = f"rnnmem_user_{abs(hash(str(path.resolve())))}"
        try:
            spec_obj = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[mod_name] = module
            spec_obj.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - user code: report it on one line
            sys.modules.pop(mod_name, None)
            raise InvalidParameterError(f"--model: importing {where!r} failed: "
                                        f"{_short(exc)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001
            raise InvalidParameterError(f"--model: cannot import {where!r}: "
                                        f"{_short(exc)}") from None
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        raise InvalidParameterError(f"--model: {where!r} has no callable {name!r}")
    return factory


def _why_not_loaded(p: Path, exc: BaseException) -> str:
    """Why ``torch.load(p, weights_only=True)`` (or safetensors) failed, named from the
    file's first bytes and torch's message: empty, another format, pickled objects that
    weights_only refuses (a whole model saved with ``torch.save(model)``), or damaged."""
    from ..models.registry import refused_pickle

    try:
        with open(p, "rb") as fh:
            head = fh.read(2)
    except OSError:
        head = None
    if head == b"":
        return "it is empty (0 bytes)"
    if p.suffix == ".safetensors":
        return f"not a valid safetensors file ({_short(exc)})"
    if head is not None and head != b"PK" and head[:1] != b"\x80":
        return ("not a torch file (neither a zip archive nor a pickle; a text file or "
                "another format? weights may also be given as .safetensors)")
    if refused_pickle(exc):
        return ("it holds pickled Python objects besides tensors, e.g. a whole model "
                "saved with torch.save(model), which torch.load(weights_only=True) refuses "
                "without running them; save model.state_dict() (or a .safetensors file) "
                "instead")
    return f"truncated or damaged ({_short(exc)})"


def load_weights(model, path: str, device="cpu") -> None:
    """Load a state dict strictly into ``model`` (weights_only / safetensors)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"--weights: no such file {path!r}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p), device=str(device))
        else:
            with warnings.catch_warnings():  # torch's notes on pickle protocols: noise
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"--weights: cannot load {path!r} as a state dict: "
                              f"{_why_not_loaded(p, exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"--weights: {path!r} does not hold a state dict "
                              f"(name -> tensor)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"--weights: {path!r} does not fit {type(model).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from None


def build_user_model(spec: str, *, weights: str | None = None, model_args=(),
                     device="cpu"):
    """(module, factory kwargs): the model of ``--model`` with its ``--weights``."""
    import torch

    from .train import parse_assignments

    kwargs = parse_assignments(model_args, "--model-arg")
    factory = resolve_factory(spec)
    try:
        model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - user code
        raise InvalidParameterError(f"--model: {spec}({', '.join(kwargs)}) failed: "
                                    f"{_short(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise InvalidParameterError(f"--model: {spec} returned {type(model).__name__}, not "
                                    f"an nn.Module")
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise InvalidParameterError(f"--device: {_short(exc)}") from None
    if weights is not None:
        load_weights(model, weights, device)
    model.eval()
    return model, kwargs


def parse_readout(text, model):
    """``--readout``: an integer index, or a dotted submodule name of ``model``."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    obj = model
    for part in str(text).split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InvalidParameterError(f"--readout: {type(model).__name__} has no "
                                        f"submodule {text!r} (nor is it an integer index)")
    if not callable(obj):
        raise InvalidParameterError(f"--readout: {text!r} is not callable")
    return obj
