"""`python -m redsession`: the same as the `redsession` command."""

from __future__ import annotations

from redsession.cli import main

if __name__ == "__main__":
    main()
