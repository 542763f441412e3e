"""``python -m truthinmotion ...``: the ``tim`` command (under ``torchrun`` too)."""

from .apps.cli import main

if __name__ == "__main__":
    main()
