"""Layer 2: video in and out: decoding sampled frames, probing, and generated face clips.

See docs/architecture.md for the layers and a module map.
"""
