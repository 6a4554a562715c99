"""Mechanisms every part of d2kd shares, each written once: files, checkpoints, runs, timing."""
