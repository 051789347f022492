import sys

from .cli import main

code = main()
if code == 130:
    # Ctrl-C was handled and reported. CPython (3.8 to 3.12) remembers a KeyboardInterrupt
    # that ended ANY string exec/eval -- e.g. the code a namedtuple generates while a module
    # is imported -- even when a caller caught it, and under ``python -m`` it then ends the
    # process by SIGINT instead of with this status (measured: 10 of 12 interrupted
    # ``python -X dev -m rnnmem run``). A string eval that ends normally clears that flag.
    exec("None")
sys.exit(code)
