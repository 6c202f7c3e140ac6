"""Stages ``dct`` and ``hash`` (to be written)."""
