"""Hugging Face transformers engine: batched chat generation and score-label probabilities.

Sampling is seeded per request, not per batch: each row draws Gumbel noise from its own
generator (seeded by the request's seed and the step), and greedy decoding over
`logits / T + Gumbel` is an exact sample from softmax(logits / T) (the Gumbel-max trick). So a
row's sample does not depend on which other rows share its batch, and a retried or resumed
batch reproduces it (up to float differences from a different amount of left padding).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor

from prefgen.engines.base import Completion, GenerationRequest, template_error
from prefgen.engines.model_source import locate_model, prepare_model_dir

_STEP_STRIDE = 0x9E3779B1  # decorrelates the per-step seeds of one row


class SeededSampler(LogitsProcessor):
    """Turns greedy decoding into per-row seeded sampling (temperature, top-k, top-p)."""

    def __init__(
        self, seeds: list[int], prompt_len: int, temperature: float, top_p: float, top_k: int
    ):
        self.seeds = seeds
        self.prompt_len = prompt_len
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        if self.top_k and self.top_k < scores.shape[-1]:
            kth = torch.topk(scores, self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
            drop_sorted = cumulative - torch.softmax(sorted_scores, dim=-1) > self.top_p
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        step = input_ids.shape[1] - self.prompt_len
        noise = torch.empty_like(scores)
        for row, seed in enumerate(self.seeds):
            gen = torch.Generator().manual_seed((seed + step * _STEP_STRIDE) % (2**63 - 1))
            uniform = torch.rand(scores.shape[-1], generator=gen).clamp_(1e-10, 1 - 1e-10)
            noise[row] = -torch.log(-torch.log(uniform))
        return scores + noise.to(scores.device)


class TransformersEngine:
    """In-process engine over an HF causal LM; loads HF directories, GGUF files or package:NAME."""

    def __init__(
        self,
        model_spec: str,
        device: str = "auto",
        dtype: str = "auto",
        max_model_len: int | None = None,
        num_threads: int | None = None,
        chat_template: str | None = None,
    ):
        if num_threads:
            torch.set_num_threads(num_threads)
        files = prepare_model_dir(locate_model(model_spec))
        self.device = (
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        torch_dtype = _dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(files.directory, gguf_file=files.gguf_file)
        self.tokenizer.padding_side = "left"  # decoder-only batching: pad before the prompt
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            files.directory, gguf_file=files.gguf_file, dtype=torch_dtype
        )
        self.model.to(self.device).eval()
        # None: the model's own context window
        self.chat_template = chat_template
        self.max_model_len = max_model_len or getattr(
            self.model.config, "max_position_embeddings", 2048
        )
        self.name = model_spec

    @classmethod
    def from_config(cls, model_cfg) -> TransformersEngine:
        # A CPU actor uses the whole cores it reserved, not every core of the node. Rounded
        # down: in a Ray Data actor on a busy node, a thread more than the cores it holds
        # costs more than it brings (measured: 2 threads on 1.75 CPUs ran 19-27 tokens/s,
        # 1 thread 34).
        threads = max(1, int(model_cfg.num_cpus + 1e-9)) if model_cfg.num_gpus == 0 else None
        return cls(
            model_cfg.path,
            model_cfg.device,
            model_cfg.dtype,
            model_cfg.max_model_len,
            threads,
            model_cfg.chat_template,
        )

    # -- prompts -------------------------------------------------------------------------------

    def chat_text(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=self.chat_template
        )

    def count_tokens(self, messages: list[dict]) -> int:
        return len(self.tokenizer(self.chat_text(messages), add_special_tokens=False).input_ids)

    # -- generation ----------------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Completions in request order. Requests with different sampling settings run as separate batches."""
        results: list[Completion | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[(r.max_tokens, r.temperature, r.top_p, r.top_k)].append(i)
        for (max_tokens, temperature, top_p, top_k), idx in groups.items():
            texts = {}
            for i in idx:
                try:
                    texts[i] = self.chat_text(requests[i].messages)
                except Exception as exc:  # noqa: BLE001 - the template refuses this conversation
                    results[i] = template_error(exc)
            idx = [i for i in idx if i in texts]
            texts = [texts[i] for i in idx]
            lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
            runnable = []
            for i, text, n in zip(idx, texts, lengths):
                if n + max_tokens > self.max_model_len:
                    results[i] = Completion(
                        "",
                        f"error: prompt_too_long ({n} tokens + {max_tokens} new > {self.max_model_len})",
                        0,
                    )
                else:
                    runnable.append((i, text))
            if runnable:
                seeds = [requests[i].seed for i, _ in runnable]
                outs = self._generate_batch(
                    [t for _, t in runnable], seeds, max_tokens, temperature, top_p, top_k
                )
                for (i, _), out in zip(runnable, outs):
                    results[i] = out
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate_batch(
        self, texts, seeds, max_tokens, temperature, top_p, top_k
    ) -> list[Completion]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device
        )
        prompt_len = enc.input_ids.shape[1]
        processors = []
        if temperature > 0:
            processors.append(SeededSampler(seeds, prompt_len, temperature, top_p, top_k))
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        out = self.model.generate(**enc, generation_config=config, logits_processor=processors)
        completions = []
        eos = self.tokenizer.eos_token_id
        for row in out[:, prompt_len:].tolist():
            if eos in row:
                cut = row.index(eos)
                tokens, reason = row[:cut], "stop"
            else:
                tokens, reason = row, "length"
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            completions.append(Completion(text, reason, len(tokens)))
        return completions

    # -- judging -------------------------------------------------------------------------------

    @torch.inference_mode()
    def label_probabilities(
        self, conversations: list[list[dict]], assistant_prefix: str, labels: list[str]
    ) -> list[dict[str, float]]:
        """P(label) after `assistant_prefix` for each conversation, renormalized over `labels`.

        Multi-token labels ("10" is "1","0" for this tokenizer) are scored as sequences: P("1")
        is split between "1" and "10" by the next-token distribution after "1". One forward
        pass over prefix + the deepest label path yields the distributions at every node of
        that path, so a 1-10 scale costs one pass, not one per label.
        """
        texts = [self.chat_text(c) + assistant_prefix for c in conversations]
        bases = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        label_tokens = [tuple(self._continuation_tokens(texts[0], label)) for label in labels]
        nodes = {t[:k] for t in label_tokens for k in range(len(t))}
        chains = [n for n in nodes if not any(len(m) > len(n) and m[: len(n)] == n for m in nodes)]
        dists: dict[tuple, torch.Tensor] = {}  # trie node -> [batch, vocab] next-token log-probs
        for chain in chains:
            logprobs = self._path_logprobs(bases, list(chain))  # [batch, len(chain)+1, vocab]
            for k in range(len(chain) + 1):
                dists[chain[:k]] = logprobs[:, k, :]
        results = []
        for b in range(len(texts)):
            scores = {}
            for label, tokens in zip(labels, label_tokens):
                prob = float(
                    torch.tensor(
                        sum(float(dists[tokens[:k]][b, tok]) for k, tok in enumerate(tokens))
                    ).exp()
                )
                # a label that is a prefix of a longer label must also *stop* here
                longer = {
                    t[len(tokens)]
                    for t in label_tokens
                    if len(t) > len(tokens) and t[: len(tokens)] == tokens
                }
                if longer:
                    prob *= max(0.0, 1.0 - sum(float(dists[tokens][b, c].exp()) for c in longer))
                scores[label] = prob
            total = sum(scores.values())
            results.append({k: (v / total if total > 0 else 0.0) for k, v in scores.items()})
        return results

    @torch.inference_mode()
    def response_logprobs(
        self,
        conversations: list[list[dict]],
        responses: list[str],
        max_batch_tokens: int = 2048,
    ) -> list[float | None]:
        """Sum of the log-probs of each response's tokens after its chat-templated conversation.

        Teacher-forced: log p(response | conversation) = sum over response tokens of
        log p(token | everything before it), the density a CDR scorer compares between two
        models. No end-of-turn token is added. None (not a crash) when conversation plus
        response do not fit in `max_model_len`. Sequences are right-padded, so each row's
        positions and attention are exactly those of running it alone, and batched in
        chunks of about `max_batch_tokens` tokens to bound the logits' memory.
        """
        results: list[float | None] = [None] * len(conversations)
        seqs = []  # (index, token ids, number of prompt tokens)
        for k, (conv, response) in enumerate(zip(conversations, responses)):
            prompt = self.chat_text(conv)
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
            response_ids = self._continuation_tokens(prompt, response) if response else []
            if not response_ids:
                results[k] = 0.0  # the empty continuation has probability 1
            elif len(prompt_ids) + len(response_ids) <= self.max_model_len:
                seqs.append((k, prompt_ids + response_ids, len(prompt_ids)))
        seqs.sort(key=lambda s: len(s[1]))  # similar lengths together: less padding
        chunk: list = []
        for seq in seqs + [None]:
            if chunk and (seq is None or (len(chunk) + 1) * len(seq[1]) > max_batch_tokens):
                for (k, _, _), value in zip(chunk, self._sum_logprobs(chunk)):
                    results[k] = value
                chunk = []
            if seq is not None:
                chunk.append(seq)
        return results

    def _sum_logprobs(self, chunk: list[tuple[int, list[int], int]]) -> list[float]:
        width = max(len(ids) for _, ids, _ in chunk)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([s + [pad] * (width - len(s)) for _, s, _ in chunk], device=self.device)
        mask = torch.tensor(
            [[1] * len(s) + [0] * (width - len(s)) for _, s, _ in chunk], device=self.device
        )
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        sums = []
        for b, (_, seq, n_prompt) in enumerate(chunk):
            # The token at position t is predicted by the logits at position t - 1.
            step_logits = logits[b, n_prompt - 1 : len(seq) - 1, :].float()
            targets = ids[b, n_prompt : len(seq)].unsqueeze(-1)
            logprobs = torch.log_softmax(step_logits, dim=-1).gather(-1, targets)
            sums.append(float(logprobs.sum()))
        return sums

    def _continuation_tokens(self, text: str, label: str) -> list[int]:
        base = self.tokenizer(text, add_special_tokens=False).input_ids
        full = self.tokenizer(text + label, add_special_tokens=False).input_ids
        if full[: len(base)] == base and len(full) > len(base):
            return full[len(base) :]
        return self.tokenizer(label, add_special_tokens=False).input_ids

    def _path_logprobs(self, bases: list[list[int]], path: list[int]) -> torch.Tensor:
        """Log-probs of the next token after base, base+path[:1], ..., base+path (left padded)."""
        seqs = [b + path for b in bases]
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device
        )
        logits = (
            self.model(input_ids=ids, attention_mask=mask).logits[:, -(len(path) + 1) :, :].float()
        )
        return torch.log_softmax(logits, dim=-1).cpu()


def _dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
