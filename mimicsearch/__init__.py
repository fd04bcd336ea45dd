"""mimicsearch runtime: encode clinical notes with an exported model and search them (no torch)."""
