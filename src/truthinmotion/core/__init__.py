"""Layer 0, imported by every other: settings (defaults < YAML < command line), the two errors,
atomic files and the work directory's layout, metrics. Imports nothing of the package.

See docs/architecture.md for the layers and a module map.
"""

__version__ = "0.1.0"
