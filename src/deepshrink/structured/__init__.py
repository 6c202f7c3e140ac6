"""Structured pruning: whole neurons and channels removed, the dependent layers rewired.

:func:`channel_groups` finds which channels of a traced network stand or fall together,
:func:`shrink` removes chosen channels for real and :func:`narrow` removes the least important
fraction, giving a smaller dense network (usable outside a compression run: a narrower copy of a
teacher is a distillation student). The stage ``structured`` lives in
:mod:`deepshrink.structured.stage` (imported by the stage registry).
"""

from deepshrink.structured.groups import ChannelGroup, Slice, channel_groups
from deepshrink.structured.rewire import ChannelImportance, channel_importance, kept_count, narrow, select, shrink

__all__ = ["ChannelGroup", "ChannelImportance", "Slice", "channel_groups", "channel_importance", "kept_count",
           "narrow", "select", "shrink"]
