"""Generation techniques: k of N models per prompt, principle sampling, several samples,
Verbalized Sampling. Pure functions first, then the stage on the real bundled model."""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from prefgen.config import ConfigError, GenerateConfig, ModelConfig
from prefgen.data.rows import new_row, stable_seed, to_rows, to_table
from prefgen.data.schema import RESPONSE_SCHEMA
from prefgen.generate.generator import (
    GenerateStage,
    assign_models,
    draw_principle,
    plan_calls,
    pool_model,
    principle_weights,
)
from prefgen.generate.verbalized import UNPARSEABLE
from prefgen.run.registry import load_pipeline
from prefgen.run.sink import split_tables

ROOT = Path(__file__).resolve().parents[2]
UF_WEIGHTS = {
    "helpfulness": 0.6,
    "truthfulness": 0.2,
    "honesty": 0.18,
    "verbalized_calibration": 0.02,
}
PRINCIPLES = {
    "helpfulness": ["Be helpful.", "Be useful and engaging."],
    "truthfulness": ["Be truthful."],
    "honesty": ["Say when you are unsure."],
    "verbalized_calibration": ["End with 'Confidence: N%'."],
}


def _row(prompt_id: str, text: str = "Name a color.", **kw) -> dict:
    row = new_row("f", 0, "{}")
    row.update({"id": prompt_id, "messages": [{"role": "user", "content": text}], **kw})
    return row


def _gen(models: list[ModelConfig], **kw) -> GenerateConfig:
    return GenerateConfig(models=models, max_tokens=8, **kw)


# ---------------------------------------------------------------- k of N models per prompt


def test_assignment_is_deterministic_k_sized_and_ignores_model_order():
    names = [f"m{i}" for i in range(6)]
    for prompt in ("p1", "p2", "p3"):
        chosen = assign_models(prompt, names, 3, seed=0)
        assert len(chosen) == 3 and set(chosen) <= set(names)
        assert chosen == assign_models(prompt, names, 3, seed=0)
        assert chosen == [n for n in names if n in chosen]  # reported in config order
        assert set(assign_models(prompt, names[::-1], 3, seed=0)) == set(chosen)
    seeds = {tuple(assign_models(f"p{i}", names, 3, seed=s)) for i in range(20) for s in (0, 1)}
    assert len(seeds) > 10  # seed and prompt both change the choice
    assert assign_models("p1", names, None, seed=0) == names
    assert assign_models("p1", names, 6, seed=0) == names


@pytest.mark.parametrize(("n", "k", "prompts"), [(5, 2, 3000), (17, 4, 3400)])
def test_assignment_is_balanced_across_models_and_pairs(n, k, prompts):
    names = [f"model-{i}" for i in range(n)]
    per_model, per_pair = Counter(), Counter()
    for i in range(prompts):
        chosen = assign_models(f"prompt-{i}", names, k, seed=7)
        assert len(chosen) == k
        per_model.update(chosen)
        per_pair.update(itertools.combinations(chosen, 2))
    expected = prompts * k / n
    assert all(abs(per_model[m] - expected) < 0.15 * expected for m in names), per_model
    # every pair of models meets (pairs can be formed across all of them), about equally often
    pairs = list(itertools.combinations(names, 2))
    expected_pair = prompts * k * (k - 1) / (n * (n - 1))
    assert all(abs(per_pair[p] - expected_pair) < 0.4 * expected_pair for p in pairs)


def test_adding_a_model_moves_only_the_slots_it_wins():
    names = ["a", "b", "c", "d"]
    moved = 0
    for i in range(500):
        before = set(assign_models(f"p{i}", names, 2, seed=0))
        after = set(assign_models(f"p{i}", [*names, "e"], 2, seed=0))
        if before != after:
            moved += 1
            assert "e" in after and len(before & after) >= 1
    assert 0.3 * 500 < moved < 0.5 * 500  # "e" wins 2 of 5 slots' worth: about 40% of prompts


def test_pool_batches_widen_by_n_over_k():
    models = [ModelConfig(name=n, batch_size=8) for n in "abcde"]
    assert pool_model(models[0], _gen(models, models_per_prompt=2)).batch_size == 20
    assert pool_model(models[0], _gen(models)).batch_size == 8
    assert pool_model(models[0], _gen(models, models_per_prompt=5)).batch_size == 8


# ---------------------------------------------------------------- principles


def test_principle_draws_follow_the_weights_and_stay_in_their_pool():
    drawn = Counter()
    for i in range(5000):
        principle, prompt = draw_principle(PRINCIPLES, UF_WEIGHTS, f"p{i}", "m", 0, seed=0)
        assert prompt in PRINCIPLES[principle]
        drawn[principle] += 1
    for name, weight in UF_WEIGHTS.items():
        assert abs(drawn[name] / 5000 - weight) < 0.025, drawn
    # both system prompts of a principle get used
    prompts = {
        draw_principle(PRINCIPLES, {"helpfulness": 1}, f"p{i}", "m", 0, 0) for i in range(50)
    }
    assert {p for _, p in prompts} == set(PRINCIPLES["helpfulness"])


def test_principle_draw_is_deterministic_per_prompt_model_sample_and_key_order_free():
    reordered = dict(reversed(list(PRINCIPLES.items())))
    draws = {}
    for i, model, sample in itertools.product(range(40), ("a", "b"), (0, 1)):
        one = draw_principle(PRINCIPLES, UF_WEIGHTS, f"p{i}", model, sample, seed=3)
        assert one == draw_principle(reordered, UF_WEIGHTS, f"p{i}", model, sample, seed=3)
        draws[i, model, sample] = one
    assert len({d for (_, _, s), d in draws.items() if s == 0}) > 1
    assert any(draws[i, "a", 0] != draws[i, "a", 1] for i in range(40))  # per sample
    assert any(draws[i, "a", 0] != draws[i, "b", 0] for i in range(40))  # per model
    assert draw_principle(PRINCIPLES, {"honesty": 0.0}, "p", "m", 0, 0) is None


def test_zero_weight_and_per_domain_weights():
    gen = _gen(
        [ModelConfig(name="m")],
        principles=PRINCIPLES,
        principle_weights={"helpfulness": 1.0, "honesty": 0.0},
        principle_weights_by_domain={"math": {"truthfulness": 1.0}},
    )
    assert principle_weights(gen, "math") == {"truthfulness": 1.0}
    assert principle_weights(gen, "chat") == {"helpfulness": 1.0, "honesty": 0.0}
    assert principle_weights(_gen([ModelConfig(name="m")], principles=PRINCIPLES), None) == {
        name: 1.0 for name in PRINCIPLES
    }
    for i in range(30):
        assert draw_principle(PRINCIPLES, principle_weights(gen, None), f"p{i}", "m", 0, 0)[0] == (
            "helpfulness"
        )


def test_system_prompt_precedence_prompt_then_model_then_principle():
    plain = ModelConfig(name="plain", samples_per_prompt=2)
    own = ModelConfig(name="own", system_prompt="Answer in one word.")
    gen = _gen([plain, own], principles=PRINCIPLES, principle_weights=UF_WEIGHTS)
    rows = [
        _row("p1"),
        _row(
            "p2", messages=[{"role": "system", "content": "mine"}, {"role": "user", "content": "x"}]
        ),
    ]
    calls = plan_calls(rows, gen.resolved(plain), 0, gen)
    by_row = {(c.row, c.call): c for c in calls}
    for sample in (0, 1):
        system, user = by_row[0, sample].request.messages
        assert system["role"] == "system" and user["content"] == "Name a color."
        assert system["content"] in PRINCIPLES[by_row[0, sample].principle]
    assert by_row[1, 0].principle is None  # the prompt's own system message wins
    assert by_row[1, 0].request.messages[0]["content"] == "mine"
    own_calls = plan_calls(rows, gen.resolved(own), 0, gen)
    assert [c.principle for c in own_calls] == [None, None]  # the model's system prompt wins
    assert own_calls[0].request.messages[0]["content"] == "Answer in one word."


def test_plan_skips_unassigned_and_rejected_rows_and_keeps_the_sample_seeds():
    models = [ModelConfig(name=n, samples_per_prompt=2) for n in ("a", "b", "c")]
    gen = _gen(models, models_per_prompt=1, seed=5)
    rows = [_row(f"p{i}") for i in range(12)]
    rows.append(new_row("f", 99, "x") | {"status": "rejected"})
    planned = Counter()
    for m in models:
        for call in plan_calls(rows, gen.resolved(m), 5, gen):
            row = rows[call.row]
            assert assign_models(row["id"], ["a", "b", "c"], 1, 5) == [m.name]
            # seeds are those of plain sampling: the techniques do not change existing outputs
            assert call.request.seed == stable_seed(5, row["id"], m.name, call.call)
            planned[call.row] += 1
    assert planned == {i: 2 for i in range(12)}  # each prompt: one model, two samples


def test_verbalized_plan_puts_the_instruction_in_the_user_turn():
    model = ModelConfig(name="vs", verbalized_k=4, system_prompt="Be brief.")
    (call,) = plan_calls([_row("p1")], _gen([model]).resolved(model), 0, _gen([model]))
    system, user = call.request.messages
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"].startswith("Generate 4 possible responses")
    assert user["content"].endswith("Name a color.")


# ---------------------------------------------------------------- config


UF_YAML = """
name: uf-techniques
input: {path: pipelines/data/quickstart_prompts.jsonl}
output: {path: runs/uf-techniques}
generate:
  max_tokens: 64
  temperature: 1.0
  seed: 0
  models_per_prompt: 2
  principles:
    helpfulness:
      - "Give accurate, relevant and useful information, and make the answer engaging."
      - "Be a reliable, helpful source: check your facts and explain them clearly."
    truthfulness:
      - "Answer truthfully; do not invent facts that the question does not support."
    honesty:
      - "Say when you are unsure, and answer 'I don't know' rather than guess."
    verbalized_calibration:
      - "End your answer with 'Confidence: N%', how sure you are that it is correct."
  principle_weights: {helpfulness: 0.6, truthfulness: 0.2, honesty: 0.18, verbalized_calibration: 0.02}
  principle_weights_by_domain:
    math: {helpfulness: 0.6, truthfulness: 0.2, verbalized_calibration: 0.2}
  models:
    - {name: uf-a, num_cpus: 0.3, batch_size: 4}
    - {name: uf-b, num_cpus: 0.3, batch_size: 4, temperature: 0.7, samples_per_prompt: 2}
    - {name: uf-c, num_cpus: 0.3, batch_size: 4, verbalized_k: 3, max_tokens: 192}
judge:
  llm:
    - {name: uf, kind: listwise, rubric: ultrafeedback, model: {name: uf-judge, num_cpus: 0.3}}
  math_verifier: {enabled: false}
"""


def _load(tmp_path, text: str, overrides=None):
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return load_pipeline(path, overrides)


def test_ultrafeedback_style_generate_section_loads(tmp_path):
    cfg = _load(tmp_path, UF_YAML.replace("pipelines/", f"{ROOT}/pipelines/"))
    gen = cfg.generate
    assert gen.models_per_prompt == 2 and gen.models[2].verbalized_k == 3
    assert gen.principle_weights["honesty"] == 0.18
    assert gen.principle_weights_by_domain["math"]["verbalized_calibration"] == 0.2
    assert len(gen.principles["helpfulness"]) == 2


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("generate.models_per_prompt=0", "generate.models_per_prompt"),
        ("generate.models_per_prompt=4", "generate.models_per_prompt"),
        ("generate.principle_weights.kindness=1.0", "generate.principle_weights.kindness"),
        ("generate.principle_weights.honesty=-1", "generate.principle_weights.honesty"),
        (
            "generate.principle_weights_by_domain.math.honesty=-0.5",
            "generate.principle_weights_by_domain.math.honesty",
        ),
        ("generate.principles.honesty=[]", "generate.principles.honesty"),
        ("generate.models.2.verbalized_k=0", "generate.models.2.verbalized_k"),
    ],
)
def test_bad_technique_options_name_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        _load(tmp_path, UF_YAML, [override])


def test_principles_that_no_model_would_use_are_refused(tmp_path):
    data = yaml.safe_load(UF_YAML)
    for m in data["generate"]["models"]:
        m["system_prompt"] = "Mine."
    with pytest.raises(ConfigError, match="key 'generate.principles'"):
        _load(tmp_path, yaml.safe_dump(data))


# ---------------------------------------------------------------- the stage, real model


class RecordingEngine:
    """The real engine, with the requests it was asked for recorded (no fake answers)."""

    def __init__(self, engine):
        self.engine, self.requests = engine, []

    def generate(self, requests):
        self.requests.extend(requests)
        return self.engine.generate(requests)


def test_stage_on_the_bundled_model(engine, monkeypatch):
    """3 "models" on the bundled weights, 2 per prompt, principles, 2 samples, Verbalized k=3."""
    recording = RecordingEngine(engine)
    models = [
        ModelConfig(name="a", samples_per_prompt=2),
        ModelConfig(name="b", system_prompt="Answer in one word."),
        ModelConfig(name="c", verbalized_k=3, max_tokens=24),
    ]
    gen = _gen(models, models_per_prompt=2, principles=PRINCIPLES, temperature=1.0, seed=0)
    rows = [_row(f"q{i}", f"Name a color number {i}.") for i in range(3)]
    rows.append(new_row("f", 9, "x") | {"status": "rejected", "reason": "bad_json"})
    names = ["a", "b", "c"]
    assigned = {r["id"]: assign_models(r["id"], names, 2, 0) for r in rows[:3]}
    assert all(any(n in a for a in assigned.values()) for n in names)  # every pool has work

    out = rows
    for m in models:
        before = len(recording.requests)
        out = GenerateStage(gen.resolved(m), seed=0, generate=gen, engine=recording)(out)
        expected_calls = sum(m.samples_per_prompt for a in assigned.values() if m.name in a)
        assert len(recording.requests) - before == expected_calls  # no engine time on others
    out = to_rows(to_table(out))  # and the rows survive the in-flight Arrow schema

    for row in out[:3]:
        assert row["assigned_models"] == assigned[row["id"]]
        by_model = {}
        for r in row["responses"]:
            by_model.setdefault(r["model"], []).append(r)
        assert sorted(by_model) == assigned[row["id"]]
        for r in by_model.get("a", []):
            assert r["principle"] in PRINCIPLES
            assert r["system_prompt"] in PRINCIPLES[r["principle"]]
            assert r["verbalized_probability"] is None and r["n_tokens"] > 0
        if "a" in by_model:
            texts = [r["text"] for r in sorted(by_model["a"], key=lambda r: r["sample"])]
            assert len(texts) == 2 and texts[0] != texts[1]  # samples are seeded apart
        for r in by_model.get("b", []):
            assert r["principle"] is None and r["system_prompt"] == "Answer in one word."
        if "c" in by_model:
            vs = by_model["c"]
            assert [r["sample"] for r in vs] == [0, 1, 2]
            assert sum(r["n_tokens"] for r in vs) > 0  # the call's tokens are all accounted
            for r in vs:
                assert r["principle"] in PRINCIPLES
                if r["finish_reason"] == UNPARSEABLE:
                    assert r["text"] == "" and r["verbalized_probability"] is None
                else:
                    assert r["finish_reason"] == "stop" and r["text"].strip()
                    p = r["verbalized_probability"]
                    assert p is None or 0 <= p <= 1
    assert out[3]["responses"] == [] and out[3]["status"] == "rejected"

    # the responses table carries the new columns
    table = pa.Table.from_pylist(split_tables(out)["responses"], schema=RESPONSE_SCHEMA)
    assert set(table["principle"].drop_null().to_pylist()) <= set(PRINCIPLES)
    assert table["principle"].null_count < table.num_rows

    # a batch with nothing for this model passes through without an engine call
    lonely = next(r for r in out[:3] if "c" not in assigned[r["id"]])
    untouched = copy.deepcopy(lonely)
    calls = len(recording.requests)
    stage_c = GenerateStage(gen.resolved(models[2]), seed=0, generate=gen, engine=recording)
    assert stage_c([lonely]) == [untouched]
    assert len(recording.requests) == calls
