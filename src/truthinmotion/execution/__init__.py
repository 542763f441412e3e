"""Layer 1: how per-video work runs: worker processes or Ray actors, the resumable stage runner
with its error log, and the checks made before any video (disk, memory, writable outputs).

See docs/architecture.md for the layers and a module map.
"""
