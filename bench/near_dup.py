"""Near-duplicate detection at scale: the SimHash (LSH) pass vs the exact pass.

Sentence embeddings of prompts are not random vectors: unrelated prompts sit at cosine ~0.2-0.4
and near-copies above 0.9. This bench builds unit vectors with that shape (a shared component,
per-topic components, injected near-copies at a known rate), then prints, side by side:

* time of the exact pass and of the LSH pass on a sample both can do (`--sample`);
* recall and precision of LSH against the exact pass on that sample;
* time of the LSH pass at the full size (`--prompts`, default 100k), where the exact pass
  would take hours, with the exact pass's time extrapolated as n^2 from the sample.

    .venv/bin/python bench/near_dup.py [--prompts 100000] [--sample 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from prefgen.ingest.near_dup import find_near_duplicates, find_near_duplicates_lsh


def embeddings(n: int, dim: int = 384, copy_rate: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(dim)
    topics = rng.standard_normal((64, dim))
    x = 0.6 * shared + 0.5 * topics[rng.integers(0, 64, n)] + rng.standard_normal((n, dim))
    originals = rng.integers(0, n, int(n * copy_rate))
    for i in originals:  # a perturbed copy somewhere after the original
        j = int(rng.integers(i, n))
        x[j] = x[i] + 0.2 * rng.standard_normal(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    sample = embeddings(args.sample)
    t = time.perf_counter()
    exact = find_near_duplicates(sample, args.threshold)
    t_exact = time.perf_counter() - t
    t = time.perf_counter()
    lsh = find_near_duplicates_lsh(sample, args.threshold)
    t_lsh = time.perf_counter() - t
    truth = {i for i, h in enumerate(exact) if h}
    found = {i for i, h in enumerate(lsh) if h}
    recall = len(truth & found) / len(truth) if truth else 1.0
    precision = len(truth & found) / len(found) if found else 1.0
    print(f"sample {args.sample}: exact {t_exact:6.1f}s  lsh {t_lsh:6.1f}s  "
          f"near-dups {len(truth)}  recall {recall:.4f}  precision {precision:.4f}")  # fmt: skip
    full = embeddings(args.prompts, seed=1)
    t = time.perf_counter()
    hits = find_near_duplicates_lsh(full, args.threshold)
    t_full = time.perf_counter() - t
    projected = t_exact * (args.prompts / args.sample) ** 2
    print(f"full {args.prompts}: lsh {t_full:6.1f}s ({sum(h is not None for h in hits)} near-dups)  "
          f"exact projected ~{projected:6.0f}s (n^2 from the sample)  "
          f"lsh time ~ n^{np.log(t_full / t_lsh) / np.log(args.prompts / args.sample):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
