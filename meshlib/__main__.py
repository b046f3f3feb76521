"""``python -m meshlib``: the ``meshlib`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
