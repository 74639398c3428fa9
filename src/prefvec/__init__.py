"""prefvec: merge preference vectors into one base language model, per request."""

__version__ = "0.1.0"
