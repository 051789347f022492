"""The protocols known by name: the built-ins (:mod:`.builtin`) and those registered with
:func:`register_protocol`; :func:`get_protocol` also reads protocol files."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import UnknownNameError
from .builtin import BUILTIN
from .protocol import Protocol, load_protocol

__all__ = ["PROTOCOLS", "register_protocol", "get_protocol", "protocol_names"]

#: name -> function returning the Protocol (built lazily: registering costs nothing)
PROTOCOLS: dict[str, Callable[[], Protocol]] = dict(BUILTIN)


def register_protocol(name: str):
    """Decorator on a function ``() -> Protocol``: a protocol listed by
    ``rnnmem protocols`` and found by name by ``rnnmem run``."""

    def deco(fn):
        if name in PROTOCOLS and PROTOCOLS[name] is not fn:
            raise ValueError(f"protocol {name!r} registered twice")
        PROTOCOLS[name] = fn
        return fn

    return deco


def protocol_names() -> list[str]:
    return sorted(PROTOCOLS)


def get_protocol(name_or_file: str | Path) -> Protocol:
    """A registered protocol by name, or a protocol read from a TOML file."""
    key = str(name_or_file)
    if key in PROTOCOLS:
        p = PROTOCOLS[key]()
        if p.name != key:
            raise ValueError(f"protocol registered as {key!r} is named {p.name!r}")
        return p
    path = Path(key)
    if path.suffix == ".toml" or path.is_file():
        return load_protocol(path)
    raise UnknownNameError("protocol (a registered name or a .toml file)", key,
                           sorted(PROTOCOLS))
