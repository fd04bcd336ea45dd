"""CLI commands: encode."""
from __future__ import annotations

COMMANDS: list = []
