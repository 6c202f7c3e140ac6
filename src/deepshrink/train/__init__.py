"""Training and evaluation."""

from deepshrink.train.loop import History, TrainConfig, evaluate, fit

__all__ = ["History", "TrainConfig", "evaluate", "fit"]
