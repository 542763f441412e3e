"""Layer 8: scoring videos with a trained detector: the verdict schema, the scorer (CPU preparer
and model stage), batching across videos, early stop, explanation and evidence, ``detect``.

See docs/architecture.md for the layers and a module map.
"""
