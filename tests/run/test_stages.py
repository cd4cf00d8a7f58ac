"""Phase grouping (pure): streaming is one phase; phased gives each model stage its own."""

from __future__ import annotations

from prefgen.run.stages import Stage, phases


def _stage(name: str, model: bool) -> Stage:
    return Stage(name, apply=lambda ds: ds, model=model)


def test_streaming_is_one_final_phase():
    stages = [_stage("gen", True), _stage("score", False)]
    assert phases(stages, "streaming") == [("final", stages)]


def test_phased_gives_each_model_stage_a_phase():
    quality, gen_a, gen_b, judge, score, pair = (
        _stage("quality-light", False),
        _stage("generate-a", True),
        _stage("generate-b", True),
        _stage("judge-j", True),
        _stage("score", False),
        _stage("pair", False),
    )
    got = phases([quality, gen_a, gen_b, judge, score, pair], "phased")
    assert [(name, [s.name for s in group]) for name, group in got] == [
        ("00-quality-light", ["quality-light", "generate-a"]),  # leading light stages ride along
        ("01-generate-b", ["generate-b"]),
        ("final", ["judge-j", "score", "pair"]),  # the last phase writes the tables
    ]
