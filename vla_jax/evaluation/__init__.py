"""Closed-loop evaluation: rollouts, metrics per task family (or Meta-World task) and condition, artifacts."""
