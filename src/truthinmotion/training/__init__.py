"""Layer 8: training a detector over a work directory: the dataset, the loop, distillation,
and the run directory's settings and state.

See docs/architecture.md for the layers and a module map.
"""
