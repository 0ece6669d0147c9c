"""vlbench: run query suites against the Explore API, store every hit, and measure search quality."""

__version__ = "0.1.0"
__all__ = ["__version__"]
