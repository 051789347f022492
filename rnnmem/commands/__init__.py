"""CLI subcommands, one module each (see :mod:`rnnmem.cli`)."""
