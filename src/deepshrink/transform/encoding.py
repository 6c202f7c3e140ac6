"""Encodings of DCT-coded and hashed tensors (to be written)."""
