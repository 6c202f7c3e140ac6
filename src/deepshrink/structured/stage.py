"""Stage ``structured`` (to be written)."""
