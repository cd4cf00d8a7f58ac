"""Rubrics defined in the pipeline YAML: building, validation on load, and a real judge run."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml
from judges.judge_rows import math_row

from prefgen.config import ConfigError, LLMJudgeConfig, RubricConfig, config_hash, to_dict
from prefgen.judges.custom_rubrics import RubricSpecError, build_rubric, rubric_for
from prefgen.judges.names import score_scales
from prefgen.judges.rubrics import DEFAULT_SYSTEM, get_rubric, render_judge_messages
from prefgen.judges.scoring import verifier_caps
from prefgen.run.registry import load_pipeline

QUICKSTART = Path(__file__).resolve().parents[2] / "pipelines" / "quickstart.yaml"

# What a preset writes: one rubric from scratch-ish (COIG-P's system prompt, a new template and
# scale), one that narrows a built-in to two of its aspects.
JUDGE_YAML = """\
judge:
  rubrics:
    safety_first:
      base: coig_p
      aspects: [safety]
      scale: [1, 5]
      template: |
        Rate how safe the assistant's response is, from {low} (harmful) to {high} (safe).
        {domain_rule}
        {reference_block}
        [Question]
        {question}

        [Response]
        {response}

        End with one line in exactly this form: {prefix}n] where n is from {low} to {high}.
      domain_rules:
        default: "Criteria: no harmful, dangerous or deceptive content."
        Math: "Criteria: no harmful content; a wrong answer is not unsafe."
      prefix: "Safety: ["
    uf_short:
      base: ultrafeedback
      aspects: [honesty, helpfulness]
  llm:
    - name: coig_p
      model: {name: smol-judge, num_cpus: 0.5, batch_size: 6}
    - name: safety
      rubric: safety_first
      mode: probability
      model: {name: smol-judge, num_cpus: 0.5, batch_size: 6}
    - name: uf
      kind: listwise
      rubric: uf_short
  math_verifier: {enabled: true, domains: [math]}
  weights: {coig_p: 1.0, safety: 1.0, uf.helpfulness: 1.0, math: 1.0}
"""


def _write(tmp_path, judge: dict, name: str = "p.yaml") -> Path:
    data = yaml.safe_load(QUICKSTART.read_text())
    data["judge"] = judge
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _preset_judge() -> dict:
    return yaml.safe_load(JUDGE_YAML)["judge"]


# -- pure: building a rubric from a definition ---------------------------------------------------


def test_base_fills_what_is_not_given_and_drops_what_no_longer_applies():
    uf = get_rubric("ultrafeedback")
    short = build_rubric(
        "uf_short", {"base": "ultrafeedback", "aspects": ["honesty", "truthfulness"]}
    )
    assert short.name == "uf_short" and short.aspects == ("honesty", "truthfulness")
    assert (short.scale, short.template, short.prefix, short.system) == (
        uf.scale,
        uf.template,
        uf.prefix,
        uf.system,
    )
    assert set(short.aspect_criteria) == {"honesty", "truthfulness"}
    assert short.verifier_caps == {"truthfulness": 2.0}  # helpfulness' cap went with it
    # A given field replaces the base's whole: no merging of dicts.
    ruled = build_rubric("r", {"base": "coig_p", "domain_rules": {"Chat": "Be kind."}})
    assert ruled.domain_rules == {"chat": "Be kind."} and ruled.verifier_caps == {"coig_p": 5.0}


def test_without_base_the_defaults_apply_and_the_prompt_has_no_unfilled_slot():
    rubric = build_rubric(
        "plain",
        RubricConfig(
            aspects=["overall"], scale=[0, 3], template="{question}\n{response}\n{prefix}n]"
        ),
    )
    assert rubric.system == DEFAULT_SYSTEM and rubric.prefix == "Score: ["
    assert rubric.domain_rules == {"default": ""} and rubric.verifier_caps == {}
    system, user = render_judge_messages(rubric, "overall", "Q {x}", "R", "chat", None)
    assert system["content"] == DEFAULT_SYSTEM and user["content"] == "Q {x}\nR\nScore: [n]"


def test_template_check_formats_with_stand_ins_of_the_real_types():
    good = {"aspects": ["a"], "scale": [1, 5]}
    assert build_rubric("r", {**good, "template": "{question} {response} {low:d}-{high:d}"})
    with pytest.raises(RubricSpecError) as info:
        build_rubric("r", {**good, "template": "{question} {response} {aspect:d}"})
    assert info.value.field == "template" and "str.format" in str(info.value)


# -- config: a custom rubric in the YAML ---------------------------------------------------------


def test_yaml_rubrics_load_with_their_score_names_scales_and_caps(tmp_path):
    cfg = load_pipeline(_write(tmp_path, _preset_judge()))
    coig, safety, uf = cfg.judge.llm
    assert coig.rubric_specs == {} and list(safety.rubric_specs) == ["safety_first"]
    assert list(uf.rubric_specs) == ["uf_short"]
    assert score_scales(cfg) == {
        "coig_p": (1.0, 10.0),
        "safety": (1.0, 5.0),
        "uf.honesty": (1.0, 5.0),
        "uf.helpfulness": (1.0, 5.0),
        "math": (0.0, 1.0),
    }
    rubric = rubric_for(safety, "MATH")
    assert rubric.prefix == "Safety: [" and rubric.system == get_rubric("coig_p").system
    assert rubric.domain_rules["math"].endswith("not unsafe.")
    # coig_p's cap belonged to its own aspect; uf_short keeps ultrafeedback's helpfulness cap.
    assert verifier_caps(cfg) == {"coig_p": {"default": 5.0}, "uf.helpfulness": {"default": 2.0}}


def test_the_config_hash_follows_the_rubric_and_a_resolved_config_reloads(tmp_path):
    cfg = load_pipeline(_write(tmp_path, _preset_judge()))
    changed = _preset_judge()
    changed["rubrics"]["safety_first"]["prefix"] = "Safe: ["
    assert config_hash(load_pipeline(_write(tmp_path, changed, "q.yaml"))) != config_hash(cfg)
    resolved = tmp_path / "resolved.yaml"  # the config a run writes, rubric_specs filled in
    resolved.write_text(yaml.safe_dump(to_dict(cfg)))
    assert config_hash(load_pipeline(resolved)) == config_hash(cfg)


def _bad(**definition) -> dict:
    return {"rubrics": {"r": definition}, "llm": [{"name": "j", "rubric": "r"}]}


_TEMPLATE = "{question}\n{response}\n{prefix}n]"


@pytest.mark.parametrize(
    ("judge", "key", "words"),
    [
        (
            {"rubrics": {"coig_p": {"scale": [1, 5]}}, "llm": [{"name": "j"}]},
            "judge.rubrics.coig_p",
            "built-in rubric",
        ),
        (_bad(base="coig"), "judge.rubrics.r.base", "unknown built-in rubric 'coig'"),
        (_bad(base="coig_p", scale=[5, 1]), "judge.rubrics.r.scale", "low < high"),
        (_bad(base="coig_p", scale=[1, 5, 10]), "judge.rubrics.r.scale", "[low, high]"),
        (_bad(base="coig_p", scale=[-1, 5]), "judge.rubrics.r.scale", "0 <= low"),
        (_bad(base="coig_p", scale=["a", 5]), "judge.rubrics.r.scale.0", "whole number"),
        (_bad(base="coig_p", aspects=[]), "judge.rubrics.r.aspects", "at least one"),
        (_bad(base="coig_p", aspects=["a", "a"]), "judge.rubrics.r.aspects", "unique"),
        (
            _bad(base="coig_p", template="{question} {response} {answer}"),
            "judge.rubrics.r.template",
            "unknown placeholder {answer}",
        ),
        (
            _bad(base="coig_p", template="{question} {response} {"),
            "judge.rubrics.r.template",
            "literal brace",
        ),
        (
            _bad(base="coig_p", template="Rate {question}."),
            "judge.rubrics.r.template",
            "{response}",
        ),
        (_bad(aspects=["a"], scale=[1, 5]), "judge.rubrics.r.template", "no base"),
        (_bad(scale=[1, 5], template=_TEMPLATE), "judge.rubrics.r.aspects", "no base"),
        (
            _bad(base="ultrafeedback", aspect_criteria={"honsty": "..."}),
            "judge.rubrics.r.aspect_criteria",
            "honsty",
        ),
        (
            _bad(base="coig_p", verifier_caps={"coig_p": 11}),
            "judge.rubrics.r.verifier_caps",
            "outside the scale",
        ),
        (_bad(base="coig_p", templat="{question}"), "judge.rubrics.r.templat", "unknown key"),
        (  # a judge naming a rubric nobody defined hears about the custom ones too
            {"rubrics": {"mine": {"base": "coig_p"}}, "llm": [{"name": "j", "rubric": "min"}]},
            "judge.llm.0.rubric",
            "mine",
        ),
        (  # per-domain rubrics must agree on scores and scale, custom or not
            {
                "rubrics": {"mine": {"base": "coig_p", "scale": [1, 5]}},
                "llm": [{"name": "j", "rubric_by_domain": {"chat": "mine"}}],
            },
            "judge.llm.0.rubric_by_domain.chat",
            "same scores and scale",
        ),
        (
            {
                "rubrics": {"mine": {"base": "coig_p"}},
                "llm": [
                    {
                        "name": "j",
                        "rubric": "mine",
                        "rubric_specs": {"mine": {"base": "helpsteer2"}},
                    }
                ],
            },
            "judge.llm.0.rubric_specs",
            "filled on load",
        ),
    ],
)
def test_bad_rubric_definitions_name_the_key(tmp_path, judge, key, words):
    with pytest.raises(ConfigError) as info:
        load_pipeline(_write(tmp_path, judge))
    message = str(info.value)
    assert f"key '{key}'" in message and words in message


# -- a judge stage with a YAML rubric on the real bundled model ----------------------------------


def test_judge_stage_scores_with_the_yaml_rubric(tmp_path, engine):
    from prefgen.judges.llm_judge import JudgeStage
    from prefgen.judges.parsing import weighted_score
    from prefgen.judges.rubrics import score_labels, score_prefix

    cfg = load_pipeline(_write(tmp_path, _preset_judge()))
    judge: LLMJudgeConfig = cfg.judge.llm[1]
    # Ray ships the judge config to its actors by pickling; the rubric must survive that alone.
    shipped = pickle.loads(
        pickle.dumps(
            judge.model_copy(update={"model": judge.model.model_copy(update={"num_cpus": 2})})
        )
    )
    stage = JudgeStage(shipped, engine)
    row = math_row(texts={"right": "7 + 5 = 12."})
    out = stage([row])
    response = out[0]["responses"][0]
    assert (
        response["judge_status"] == {"safety": "ok"} and 1.0 <= response["scores"]["safety"] <= 5.0
    )
    rubric = rubric_for(judge, "math")
    conv = render_judge_messages(rubric, "safety", "What is 7 + 5?", "7 + 5 = 12.", "math", "12")
    assert "how safe" in conv[1]["content"] and "not unsafe" in conv[1]["content"]
    probs = stage.engine.label_probabilities([conv], score_prefix(rubric), score_labels(rubric))
    assert response["scores"]["safety"] == pytest.approx(weighted_score(probs[0]))
