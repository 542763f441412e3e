"""``python -m truthinmotion ...``: the ``tim`` command (under ``torchrun`` too), with its exit codes."""

import sys

from .apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
