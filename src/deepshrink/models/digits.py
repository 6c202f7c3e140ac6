"""The MNIST digit classifier of the PyPI package ``ccexam`` (MIT), written here.

``ccexam.models.MNISTNet`` is conv 32@3×3 (padding 1) → ReLU → max-pool 2 → conv 64@3×3
(padding 1) → ReLU → max-pool 2 → flatten → fc 3136→128 → ReLU → fc 128→10. Its module tree is
reproduced key for key (``features.0``/``features.3``, ``classifier.0``/``classifier.2``) so the
packaged ``ccexam/weights/mnist.pth`` loads with ``strict=True``. ccexam is not imported: its
modules import torchvision and scikit-learn at load time, and its ``forward`` checks the input's
size with a Python ``if`` that tracing would have to special-case.

ccexam trained it on MNIST's training set (torchvision ``datasets.MNIST``, 10 % held out for
validation with seed 42), with inputs ``ToTensor()`` then ``Normalize((0.1307,), (0.3081,))``; the
same preprocessing is :data:`deepshrink.data.digits.MNIST_SPEC`.
"""

from __future__ import annotations

from torch import nn

__all__ = ["CcexamMnistNet", "ccexam_mnist_cnn"]


class CcexamMnistNet(nn.Module):
    """conv32–conv64–fc128–fc10 for 1×28×28 digits (421,642 parameters)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(64 * 7 * 7, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


def ccexam_mnist_cnn(num_classes: int = 10) -> CcexamMnistNet:
    """The ccexam MNIST CNN, randomly initialised; the zoo's ``ccexam-mnist-cnn`` entry loads the
    packaged weights into it."""
    return CcexamMnistNet(num_classes=num_classes)
