"""``python -m warrantysync`` is the ``warrantysync`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main(prog_name="warrantysync")
