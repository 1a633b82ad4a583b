"""Data: RLDS dataset writing (built-in tabletop), reading and input pipelines."""
