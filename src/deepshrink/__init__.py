"""deepshrink: make trained PyTorch networks small and fast for constrained devices."""

__version__ = "0.1.0"
