"""Layer 10: what people run: the ``tim`` command line, the HTTP service and the demo.

See docs/architecture.md for the layers and a module map.
"""
