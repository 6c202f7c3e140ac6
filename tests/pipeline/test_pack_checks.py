"""pack_model never writes a file that load would refuse."""

from __future__ import annotations

import pytest
from torch import nn

from deepshrink.data import InputSpec
from deepshrink.errors import ModelError
from deepshrink.pipeline.pack import pack_model


def test_a_softmax_over_the_batch_is_refused_when_packing():
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=0))
    with pytest.raises(ModelError, match="batch"):
        pack_model(model, InputSpec((4,), "float32", 1.0, (0.0,), (1.0,)))
