"""Runtime toolkit."""
