"""Uniform integer quantisation (int8, int4, per-tensor / per-channel / per-group scales) and
binary / ternary weights, post-training or trained with a straight-through estimator.

The stage class lives in :mod:`deepshrink.quant.stage` (imported by the stage registry), the
encoding in :mod:`deepshrink.quant.encoding` (imported by the encoding registry).
"""
