"""Layer 5: pseudo-fakes synthesised from real videos, above the faces they need and below the
features computed on them: the kinds (:mod:`.kinds`), their settings (:mod:`.config`, light) and
the stage that makes them (:mod:`.stage`, ``tim synth``).

See docs/architecture.md for the layers and a module map.
"""
