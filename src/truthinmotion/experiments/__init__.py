"""Layer 9: what measures detectors: evaluation, benchmarks, compression, ``tim run`` and the study.

See docs/architecture.md for the layers and a module map.
"""
