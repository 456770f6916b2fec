"""RSIR engine: data, models, fidelity-checked generation and self-improvement rounds.

The package is importable without FastAPI, Redis or RQ. Import from the
submodules (``rsir_engine.rounds``, ``rsir_engine.generation``, ...); this
top-level module stays light so that importing it does not load torch.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
