"""Modules the methods add to a training run: HEAD's assistant head, DFAD's generators."""

from .assistant import AssistantHead, anchor_proposals  # noqa: F401
from .generator import GeneratorA, GeneratorB, generated_inputs, to_pixels  # noqa: F401
