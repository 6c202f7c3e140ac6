"""Stage ``quantize`` (to be written)."""
