"""Import every model module so that each registers itself (see registry)."""

import importlib

_MODULES = ["diagonal", "ssm", "rnn", "lru", "s4d", "stack_rnn", "lm", "curse_original"]

for _m in _MODULES:
    try:
        importlib.import_module(f"{__package__}.{_m}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__package__}.{_m}":
            raise
