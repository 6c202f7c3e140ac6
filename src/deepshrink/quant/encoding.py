"""Encoding of quantised tensors (to be written)."""
