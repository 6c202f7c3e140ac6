"""Training and evaluation, for any objective (classification, or fidelity to a dense teacher)."""

from deepshrink.train.loop import (
    History,
    Optimizer,
    Schedule,
    TrainConfig,
    as_split,
    evaluate,
    evaluate_metrics,
    fit,
)
from deepshrink.train.objectives import OBJECTIVES, Objective, get_objective, outputs, register_objective

__all__ = [
    "OBJECTIVES", "History", "Objective", "Optimizer", "Schedule", "TrainConfig", "as_split", "evaluate",
    "evaluate_metrics", "fit", "get_objective", "outputs", "register_objective",
]
