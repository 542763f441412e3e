"""Layer 2: rendering for people: the evidence page of a verdict and plots. Takes plain data
(verdicts, evidence arrays) and imports nothing above the core and media.

See docs/architecture.md for the layers and a module map.
"""
