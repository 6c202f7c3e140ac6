"""Structured pruning: whole neurons and channels removed, the dependent layers rewired.

The stage class lives in :mod:`deepshrink.structured.stage` (imported by the stage registry).
"""
