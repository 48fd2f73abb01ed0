"""The version of lstmc, in a module of its own: every stage can import it without importing the package."""

__version__ = "0.1.0"
