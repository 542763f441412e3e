"""Layer 7: detectors: DINOv2 backbones, the detector and its saved record, loading any variant,
the inputs it reads, and its verdict rule (threshold and calibration).

See docs/architecture.md for the layers and a module map.
"""
