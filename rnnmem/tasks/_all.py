"""Import every task adapter module so that each registers its tasks (see registry)."""

import importlib

#: adapter modules, in registration order; a module absent from this checkout is skipped
MODULES = ["arrays", "lf", "language_task", "ptb_task", "transduction_task", "cfl_task"]

for _m in MODULES:
    try:
        importlib.import_module(f"{__package__}.{_m}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__package__}.{_m}":
            raise
