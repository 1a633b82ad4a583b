"""Training: device mesh and shardings, optimizer, jitted train step, Orbax checkpoints, logging.

`train.py` holds the flat loop (`train_and_evaluate`), readable top to bottom; the other files are
one concept each.
"""
