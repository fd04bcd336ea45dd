"""CLI commands: index."""
from __future__ import annotations

COMMANDS: list = []
