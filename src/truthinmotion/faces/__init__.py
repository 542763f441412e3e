"""Layer 4: faces: MTCNN, tracks over time, square crops, and the faces stage over a work directory.

See docs/architecture.md for the layers and a module map.
"""
