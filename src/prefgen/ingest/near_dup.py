"""Near-duplicate prompts by embedding similarity (COIG-P: SentenceBERT dedup; docs/research.md "COIG-P: prompt curation").

Runs on the driver inside `pipeline.plan_shards`, after ingest has written the input shards
(and quotas were applied), over the valid prompts only:

    prompt texts -> ray.data.from_items -> map_batches(PromptEncoder, ActorPoolStrategy)
      (all-MiniLM-L6-v2 by default: mean pooling over tokens, L2-normalized, 384 floats)
      -> embeddings back on the driver, in input order
      -> find_near_duplicates: blockwise cosine pass, greedy in input order
      -> a prompt whose cosine to an earlier *kept* prompt exceeds `threshold` is rejected:
         stage `ingest`, reason `near_duplicate: cos=0.953 with <source#index>`

Greedy in input order keeps the first occurrence, so the same input keeps the same copy on
every run, whatever the cluster's timing (the encoder pool's output order does not matter:
rows carry their index).

Cost and scale. Embedding is the parallel part: it runs on the encoder actor pool
(`near_dup.concurrency` actors, CPUs or GPUs). Two ways to find the duplicates
(`near_dup.method`):

* `exact` (default up to `near_dup.exact_below` prompts): every prompt against every kept
  one, O(n^2 d) time, O(chunk^2 + n d) memory (blocks of `chunk_rows`). COIG-P's 92k prompts
  are ~1.6e12 multiply-adds: minutes on a driver core.
* `lsh` (the default above that): random-hyperplane (SimHash) signatures of the unit vectors,
  cut into `lsh_bands` bands of `lsh_bits` bits; a prompt is compared, exactly, only with the
  kept prompts that share a band with it. Two vectors at cosine c share a band with probability
  1 - (1 - (1 - acos(c)/pi)^bits)^bands: for c = 0.9 and the defaults (16 bits, 64 bands)
  that is 0.996. The signatures are taken of the centred vectors (the embeddings' mean
  removed), where unrelated prompts are near-orthogonal and share a band in ~0.06 % of pairs,
  so the candidates per prompt stay small (bench/near_dup.py prints the time exponent). Input
  that is mostly one template has its mean only partly removed (`_centring`), so near-copies
  close to that mean still share bands: slower there, not less exact. The decision rule is the exact one on the candidates; only a near-dup
  that shares no band is missed (bench/near_dup.py prints recall against `exact`).
"""

from __future__ import annotations

import numpy as np

from prefgen.config import NearDupConfig

__all__ = [
    "PromptEncoder",
    "embed_prompts",
    "find_near_duplicates",
    "find_near_duplicates_lsh",
    "near_duplicate_reasons",
    "prompt_text",
]


class PromptEncoder:
    """Ray Data callable: {"index", "text"} batch -> {"index", "embedding"} (unit vectors).

    Loads a sentence encoder (an HF encoder directory or package:NAME, never downloaded) once
    per actor; `encode` is the same computation without Ray, for tests and small inputs.
    """

    def __init__(
        self,
        model: str,
        max_length: int = 256,
        device: str = "auto",
        num_threads: int | None = None,
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from prefgen.engines.model_source import locate_model

        if num_threads:  # a CPU actor uses the cores it reserved, not every core of the node
            torch.set_num_threads(num_threads)
        files = locate_model(model)
        self.device = (
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.tokenizer = AutoTokenizer.from_pretrained(files.directory)
        self.model = AutoModel.from_pretrained(files.directory).to(self.device).eval()
        self.max_length = max_length

    def encode(self, texts: list[str]) -> np.ndarray:
        """Mean-pooled (over real tokens), L2-normalized embeddings: float32 [len(texts), dim]."""
        import torch

        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.float().cpu().numpy()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"index": batch["index"], "embedding": self.encode([str(t) for t in batch["text"]])}


def prompt_text(messages: list[dict]) -> str:
    """What is embedded: every turn's content, in order (system prompts included)."""
    return "\n".join(m["content"] for m in messages)


def embed_prompts(texts: list[str], cfg: NearDupConfig) -> np.ndarray:
    """Embeddings of `texts` in order, computed on an encoder actor pool (Ray must be up)."""
    import ray

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    # A few blocks per actor: enough to keep the pool busy, few enough to stay cheap to plan.
    blocks = max(1, min(len(texts) // cfg.batch_size, 8 * cfg.concurrency))
    threads = max(1, int(cfg.num_cpus)) if cfg.num_gpus == 0 else None
    ds = ray.data.from_items(
        [{"index": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=blocks
    )
    ds = ds.map_batches(
        PromptEncoder,
        fn_constructor_kwargs={
            "model": cfg.model,
            "max_length": cfg.max_length,
            "num_threads": threads,
        },
        batch_format="numpy",
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
        num_cpus=cfg.num_cpus,
        num_gpus=cfg.num_gpus,
    )
    out: np.ndarray | None = None
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        vectors = np.asarray(batch["embedding"], dtype=np.float32)
        if out is None:
            out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        out[np.asarray(batch["index"], dtype=np.int64)] = vectors
    assert out is not None
    return out


def find_near_duplicates(
    embeddings: np.ndarray, threshold: float, chunk_rows: int = 4096
) -> list[tuple[int, float] | None]:
    """For each row in order: None if kept, else (earlier kept row, cosine) it duplicates.

    `embeddings` are unit vectors, so a dot product is a cosine. Row i is dropped when its
    best cosine against rows kept before it exceeds `threshold` (the reported row is that
    best match). The decisions do not depend on `chunk_rows` (cosines may differ in the
    last float bits, as BLAS sums blocks differently); only the memory does.
    """
    n = len(embeddings)
    result: list[tuple[int, float] | None] = [None] * n
    kept_blocks: list[tuple[np.ndarray, np.ndarray]] = []  # (vectors, their row numbers)
    step = max(1, int(chunk_rows))
    for start in range(0, n, step):
        chunk = np.asarray(embeddings[start : start + step], dtype=np.float32)
        size = len(chunk)
        best = np.full(size, -np.inf, dtype=np.float32)
        best_row = np.full(size, -1, dtype=np.int64)
        rows = np.arange(size)
        for vectors, numbers in kept_blocks:  # earlier chunks: plain matrix products
            sims = chunk @ vectors.T
            top = sims.argmax(axis=1)
            top_sim = sims[rows, top]
            better = top_sim > best
            best[better] = top_sim[better]
            best_row[better] = numbers[top[better]]
        inner = chunk @ chunk.T  # this chunk against itself: resolved in order
        kept_here: list[int] = []
        for i in range(size):
            if kept_here:
                sims = inner[i, kept_here]
                k = int(sims.argmax())
                if sims[k] > best[i]:
                    best[i], best_row[i] = sims[k], start + kept_here[k]
            if best[i] > threshold:
                result[start + i] = (int(best_row[i]), float(best[i]))
            else:
                kept_here.append(i)
        if kept_here:
            kept_blocks.append((chunk[kept_here], start + np.asarray(kept_here, dtype=np.int64)))
    return result


def find_near_duplicates_lsh(
    embeddings: np.ndarray, threshold: float, bands: int = 64, bits: int = 16, seed: int = 0
) -> list[tuple[int, float] | None]:
    """`find_near_duplicates` with candidates from SimHash bands instead of every kept row.

    Same greedy rule in input order (a row is dropped when its best cosine against earlier
    *kept* rows exceeds `threshold`); the best match is searched among the kept rows that
    share at least one band of `bits` hyperplane signs with it.
    """
    n = len(embeddings)
    result: list[tuple[int, float] | None] = [None] * n
    if n == 0:
        return result
    vectors = np.asarray(embeddings, dtype=np.float32)
    # Hash the centred vectors: sentence embeddings share a common direction (unrelated prompts
    # sit at cosine ~0.2-0.4), which fills the buckets with pairs that are not near-duplicates;
    # centred, unrelated prompts are near-orthogonal and collide ~20x less. Only the candidates
    # come from the centred vectors; the decision is the exact cosine of the vectors given.
    mean = vectors.mean(axis=0)
    centred = vectors - _centring(float(mean @ mean)) * mean
    centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    planes = np.random.default_rng(seed).standard_normal((vectors.shape[1], bands * bits))
    signs = (centred @ planes.astype(np.float32)) > 0
    weights = 1 << np.arange(bits, dtype=np.int64)
    keys = (signs.reshape(n, bands, bits) * weights).sum(axis=2).tolist()  # band signatures
    buckets: list[dict[int, list[int]]] = [{} for _ in range(bands)]
    for i, row_keys in enumerate(keys):
        found: set[int] = set()
        for bucket, key in zip(buckets, row_keys):
            found.update(bucket.get(key, ()))
        if found:
            candidates = np.fromiter(found, dtype=np.int64, count=len(found))
            sims = vectors[candidates] @ vectors[i]
            k = int(sims.argmax())
            if sims[k] > threshold:
                # ties between equal cosines go to the earliest row, as in the exact pass
                best = sims[k]
                row = int(candidates[sims == best].min())
                result[i] = (row, float(best))
                continue
        for bucket, key in zip(buckets, row_keys):
            bucket.setdefault(key, []).append(i)
    return result


# Centring shortens the vectors to about sqrt(1 - |mean|^2), and a pair at cosine t moves to
# about 1 - (1 - t) / (1 - |mean|^2): harmless for typical prompts (|mean|^2 ~ 0.2), but where the
# input is one template (|mean|^2 near 1) near-copies would land in different bands. So only
# the share of the mean that keeps the vectors' mean squared length at this floor is removed:
# a pair at 0.9 then stays above ~0.875 (recall ~0.98 at the very edge with the defaults),
# and unrelated typical prompts still hash near-orthogonal.
_CENTRED_FLOOR = 0.8


def _centring(mean_sq: float) -> float:
    """How much of the mean to remove: 1 (all) when |mean|^2 <= 1 - floor, else the alpha
    with 1 - |mean|^2 (2 alpha - alpha^2) = floor."""
    room = 1.0 - _CENTRED_FLOOR
    return 1.0 if mean_sq <= room else 1.0 - float(np.sqrt(1.0 - room / mean_sq))


def near_duplicate_reasons(
    candidates: list[tuple[str, str]], cfg: NearDupConfig, embed=None
) -> list[str | None]:
    """(key, text) of each valid prompt, in input order -> the reject reason of each (None:
    kept): `near_duplicate: cos=0.953 with <key of the earlier kept prompt>`.

    `embed(texts, cfg) -> unit vectors` defaults to the Ray actor pool (`embed_prompts`).
    """
    if len(candidates) < 2:
        return [None] * len(candidates)
    vectors = (embed or embed_prompts)([text for _, text in candidates], cfg)
    method = cfg.method
    if method == "auto":
        method = "exact" if len(candidates) < cfg.exact_below else "lsh"
    if method == "exact":
        hits = find_near_duplicates(vectors, cfg.threshold, cfg.chunk_rows)
    else:
        hits = find_near_duplicates_lsh(vectors, cfg.threshold, cfg.lsh_bands, cfg.lsh_bits)
    return [
        None if hit is None else f"near_duplicate: cos={hit[1]:.3f} with {candidates[hit[0]][0]}"
        for hit in hits
    ]
