"""Closed-loop evaluation in the built-in simulator: rollouts, metrics per family and split, artifacts."""
