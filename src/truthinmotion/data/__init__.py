"""Layer 3: datasets on disk: adapters from a dataset root to a manifest, group-aware splits, and
the codecs of the compact artifacts.

See docs/architecture.md for the layers and a module map.
"""
