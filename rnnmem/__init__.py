"""rnnmem: the theory of memory in recurrent models, with symbolic verification."""
__version__ = "0.1.0"
