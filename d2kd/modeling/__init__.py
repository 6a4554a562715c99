"""Modules the methods add to a student's training run (HEAD's assistant, ...)."""

from .assistant import AssistantHead, anchor_proposals  # noqa: F401
