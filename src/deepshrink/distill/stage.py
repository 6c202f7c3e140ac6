"""Stages ``distill`` and ``dsd`` (to be written)."""
