"""The reward model: any HF backbone + a scalar head (+ optional per-aspect heads).

Bradley-Terry reward models score (prompt, response) with one number; P(a > b) =
sigmoid(r_a - r_b). Optional aspect heads (HelpSteer-style multi-objective) predict one value per
rubric aspect beside the scalar. Encoders pool by mean over tokens; decoders by the last real
token (left or right padding both handled through the attention mask).

A saved model directory is self-describing: `model.safetensors` (backbone + heads),
`config.json` and tokenizer files of the backbone, and `prefgen_reward.json` (pooling, aspects,
max length, training metadata). `load_reward_model` reads it from a local path or any fsspec
URL (copied to a local cache first).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

META_FILE = "prefgen_reward.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class RewardMeta:
    backbone: str  # the spec it was built from (package:NAME, path, ...)
    pooling: str = "mean"  # mean | last
    aspects: list[str] = field(default_factory=list)
    max_length: int = 256
    training: dict[str, Any] = field(default_factory=dict)


class RewardModel(nn.Module):
    def __init__(self, backbone: nn.Module, meta: RewardMeta):
        super().__init__()
        self.backbone = backbone
        self.meta = meta
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        self.aspect_head = nn.Linear(hidden, len(meta.aspects)) if meta.aspects else None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.meta.pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:  # last real token: with left padding it is the final position, with right padding not
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            last = (attention_mask * positions).argmax(dim=1)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        reward = self.head(pooled).squeeze(-1)
        aspects = self.aspect_head(pooled) if self.aspect_head is not None else None
        return reward, aspects


def build_reward_model(
    backbone_spec: str,
    aspects: list[str] | None = None,
    max_length: int = 256,
    pooling: str | None = None,
):
    """A fresh reward model (random heads) on a backbone from a path, a GGUF file or package:NAME."""
    from transformers import AutoModel, AutoTokenizer

    from prefgen.engines.model_source import locate_model, prepare_model_dir

    files = prepare_model_dir(locate_model(backbone_spec))
    tokenizer = AutoTokenizer.from_pretrained(files.directory)
    backbone = AutoModel.from_pretrained(files.directory, dtype=torch.float32)
    if pooling is None:
        pooling = (
            "last"
            if getattr(backbone.config, "is_decoder", False) or _is_causal(backbone.config)
            else "mean"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    meta = RewardMeta(
        backbone=backbone_spec, pooling=pooling, aspects=list(aspects or []), max_length=max_length
    )
    return RewardModel(backbone, meta), tokenizer


def _is_causal(config) -> bool:
    return any(a.endswith("ForCausalLM") for a in (getattr(config, "architectures", None) or []))


def save_reward_model(model: RewardModel, tokenizer, directory: str | Path) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    model.backbone.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / META_FILE).write_text(json.dumps(asdict(model.meta), indent=2, default=str))


def load_reward_model(url: str, storage_options: dict | None = None, device: str = "cpu"):
    """(model, tokenizer) from a saved directory at a local path or any fsspec URL."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    directory = Path(local_copy(url, storage_options))
    if not (directory / META_FILE).is_file():
        raise FileNotFoundError(f"{url} is not a prefgen reward model (no {META_FILE})")
    meta = RewardMeta(**json.loads((directory / META_FILE).read_text()))
    config = AutoConfig.from_pretrained(directory)
    backbone = AutoModel.from_config(config)
    model = RewardModel(backbone, meta)
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def local_copy(url: str, storage_options: dict | None = None) -> str:
    """A local directory holding the files at `url` (object storage is copied to a cache once)."""
    if "://" not in url or url.startswith("file://"):
        return url.removeprefix("file://")
    from prefgen.data import storage
    from prefgen.engines.model_source import cache_root

    fs, path = storage.filesystem(url, storage_options)
    # keyed by the URL *and* the meta file's version, so a model retrained to the same URL is fetched again
    info = fs.info(f"{path.rstrip('/')}/{META_FILE}")
    version = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("size")
    target = cache_root() / "remote" / hashlib.sha256(f"{url}\0{version}".encode()).hexdigest()[:16]
    if not (target / META_FILE).is_file():
        target.mkdir(parents=True, exist_ok=True)
        for remote in fs.find(path):
            rel = remote[len(path) :].lstrip("/")
            os.makedirs(target / os.path.dirname(rel), exist_ok=True)
            fs.get_file(remote, str(target / rel))
    return str(target)


def conversation_text(prompt: list[dict] | str) -> str:
    """The prompt side as plain text: the model sees roles, not a chat template it may not know."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def encode_pairs(
    tokenizer, prompts: list[list[dict] | str], responses: list[str], max_length: int
) -> dict[str, torch.Tensor]:
    """Tokenize (prompt, response) pairs so that what tells two responses apart survives.

    With a prompt, the response is capped at 3/4 of the budget (its start kept) and the prompt
    loses its start first: the response and the end of the prompt (the actual question) matter
    most. Without one (a plain-text pair: the whole conversation is the "response"), the text
    loses its start: two such texts share everything but the last turn, which is at the end.
    """
    texts = [conversation_text(p) for p in prompts]
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        if not any(texts):
            enc = tokenizer(
                responses, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
        else:
            cap = max(4, (max_length * 3) // 4)
            capped = []
            for response in responses:
                ids = tokenizer(response, add_special_tokens=False).input_ids
                capped.append(response if len(ids) <= cap else tokenizer.decode(ids[:cap]))
            enc = tokenizer(
                texts,
                capped,
                truncation="only_first",
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
    finally:
        tokenizer.truncation_side = side
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def pair_token_lengths(
    tokenizer, records: list[dict], max_length: int, chunk: int = 256
) -> list[int]:
    """Each pair's padded width in tokens, for length grouping: the longer of its two sides as
    encode_pairs cuts them, so a group's batches pad to what they will really hold."""
    lengths: list[int] = []
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        prompts = [r["prompt"] for r in part]
        enc = encode_pairs(
            tokenizer,
            prompts + prompts,
            [r["chosen"] for r in part] + [r["rejected"] for r in part],
            max_length,
        )
        widths = enc["attention_mask"].sum(dim=1).tolist()
        lengths.extend(max(a, b) for a, b in zip(widths[: len(part)], widths[len(part) :]))
    return lengths


@torch.inference_mode()
def score(
    model: RewardModel, tokenizer, prompts: list, responses: list[str], batch_size: int = 32
) -> tuple[list[float], list[list[float]] | None]:
    """Rewards (and aspect predictions when the model has aspect heads) for (prompt, response) pairs."""
    device = next(model.parameters()).device
    rewards: list[float] = []
    aspects: list[list[float]] = []
    for start in range(0, len(responses), batch_size):
        enc = encode_pairs(
            tokenizer,
            prompts[start : start + batch_size],
            responses[start : start + batch_size],
            model.meta.max_length,
        )
        r, a = model(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        rewards.extend(r.float().cpu().tolist())
        if a is not None:
            aspects.extend(a.float().cpu().tolist())
    return rewards, (aspects if model.meta.aspects else None)
