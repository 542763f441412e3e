"""``python -m truthinmotion ...``: the ``tim`` command (under ``torchrun`` too)."""

import sys

from .apps.cli import main

if __name__ == "__main__":
    sys.exit(main())  # its exit code: 1 when videos failed, 2 for bad usage or configuration
