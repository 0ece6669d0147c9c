"""vlbench's version, in a module of its own so that any module can read it without importing
the front door (`runner/__init__`, whose type-checking imports name every public module)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
