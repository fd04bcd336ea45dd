"""Export stage."""
