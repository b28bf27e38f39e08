"""dlworkflow: a reproducible deep-learning project workflow (Snakemake + DVC + Keras)."""

__version__ = "0.1.0"
