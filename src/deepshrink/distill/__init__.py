"""Knowledge distillation into a smaller student network, and dense-sparse-dense retraining.

The stage classes live in :mod:`deepshrink.distill.stage` (imported by the stage registry).
"""
