"""Time the frozen instruction encoder's warm-up at training start: full-length pads vs the shortest.

    .venv/bin/python benchmarks/encoder_warm.py [--config tabletop:small] [--rounds 3]

Training encodes every distinct training instruction and its word-deletion copies once, before
the first step (`InstructionEncoder.warm`). This encodes exactly those strings (from the config's
dataset, e.g. `data/tabletop` for the quickstart) both ways, alternating, after compiling both:
padded to the config's `max_language_tokens` (the behaviour before full batches were shortened)
and at the shortest of `encoder.FULL_BATCH_LENGTHS` that holds each batch (today's). Prints a
table and writes benchmarks/results/encoder_warm.json. The machine is shared: compare the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

from experiments.configs import metaworld, tabletop  # noqa: E402
from vla_jax.data import pipeline  # noqa: E402
from vla_jax.language import encoder as encoder_lib  # noqa: E402

CONFIGS = {"tabletop": tabletop.get_config, "metaworld": metaworld.get_config}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="tabletop:small", help="<tabletop|metaworld>:<variant>")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  name, _, variant = args.config.partition(":")
  config = CONFIGS[name](variant) if variant else CONFIGS[name]()
  data = config.data
  if data.language != "minilm":
    raise SystemExit(f"{args.config} does not read the frozen encoder (data.language={data.language!r})")
  instructions, copies = pipeline.training_instructions(data)
  texts = list(dict.fromkeys(instructions + [c for cs in copies.values() for c in cs]))
  length, shortened = int(data.max_language_tokens), encoder_lib.FULL_BATCH_LENGTHS
  ways = {f"padded to {length}": encoder_lib.InstructionEncoder("minilm", length, full_batch_lengths=()),
          "shortest of " + "/".join(map(str, shortened)): encoder_lib.InstructionEncoder("minilm", length)}
  longest = int(next(iter(ways.values())).tokenizer(texts)[1].sum(1).max())
  times = {way: [] for way in ways}
  for round_ in range(args.rounds + 1):
    for way, encoder in ways.items():
      encoder.clear()
      start = time.perf_counter()
      encoder.warm(texts)
      if round_:  # Round 0 compiles.
        times[way].append(time.perf_counter() - start)
  rows = [{"warm-up": way, "strings": len(texts), "longest (WordPieces)": longest,
           "median_s": float(np.median(t)), "runs_s": [round(x, 2) for x in t]} for way, t in times.items()]
  common.print_table(rows, list(rows[0]))
  ratio = rows[1]["median_s"] / rows[0]["median_s"]
  print(f"shortened / padded: {ratio:.2f}")
  path = common.write_results("encoder_warm", {"config": args.config, "machine": common.machine_info(),
                                               "rows": rows, "ratio": ratio})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
