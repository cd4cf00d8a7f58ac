"""Human audit: stratified blinded export for Label Studio and Argilla, and every export shape
of both tools merged back into pairs-audited/ with the agreement in the manifest."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter

import pytest
from run_builder import make_run

from prefgen.cli import main
from prefgen.curation.audit import (
    CHOICES,
    agreement_stats,
    apply_label,
    label_strength,
    read_labels,
    routing_bin,
    sample_for_audit,
)
from prefgen.curation.rebuild import entry_manifest
from prefgen.data.manifest import read_manifest, read_rows
from prefgen.data.schema import score_dict


@pytest.fixture()
def run(tmp_path):
    return make_run(tmp_path / "run", n_prompts=30)


def _export(run, tmp_path, fmt, per_domain=4, seed=0, name="audit.json"):
    out = tmp_path / name
    assert main(["audit", "export", run["url"], "--per-domain", str(per_domain),
                 "--format", fmt, "--out", str(out), "--seed", str(seed)]) == 0  # fmt: skip
    return out, json.loads(out.read_text())


def verdict(pair_id: str) -> int:
    """The simulated annotator's opinion, oriented to the judge's chosen (> 0 agrees)."""
    return (-2, 0, 1, 3)[int(pair_id, 16) % 4]


def ab_label(a_is: str, strength_for_chosen: int) -> str:
    # HelpSteer3 orientation: negative means A is better.
    ab = -strength_for_chosen if a_is == "chosen" else strength_for_chosen
    return CHOICES[ab + 3]


def test_label_studio_export_is_stratified_blinded_and_deterministic(run, tmp_path):
    out, tasks = _export(run, tmp_path, "label-studio")
    assert tasks and all(set(t) == {"data"} for t in tasks)
    data = [t["data"] for t in tasks]
    assert all({"prompt", "response_a", "response_b", "prefgen"} <= set(d) for d in data)
    per_domain = Counter(d["prefgen"]["domain"] for d in data)
    run_domains = Counter(p["domain"] for p in run["pairs"])
    assert per_domain == {d: min(4, n) for d, n in run_domains.items()}
    by_id = {p["id"]: p for p in run["pairs"]}
    for d in data:
        pair = by_id[d["prefgen"]["pair_id"]]
        side = "response_a" if d["prefgen"]["a_is"] == "chosen" else "response_b"
        assert d[side] == pair["chosen"][0]["content"]
    assert {d["prefgen"]["a_is"] for d in data} == {"chosen", "rejected"}  # order randomised
    assert (
        out.read_bytes()
        == _export(run, tmp_path, "label-studio", name="again.json")[0].read_bytes()
    )
    _, other = _export(run, tmp_path, "label-studio", seed=7, name="seed7.json")
    assert other != tasks
    config = ET.fromstring((tmp_path / "audit.json.label-config.xml").read_text())
    assert [c.get("value") for c in config.iter("Choice")] == list(CHOICES)
    assert {t.get("value") for t in config.iter("Text")} == {
        "$prompt",
        "$response_a",
        "$response_b",
    }


def test_sample_prefers_uncertain_pairs_but_keeps_every_bin():
    pairs = [
        {
            "id": f"{i:04x}",
            "domain": "chat",
            "margin": m,
            "chosen_scores": {},
            "rejected_scores": {},
        }
        for i, m in enumerate([0.2] * 3 + [2.0] * 10 + [6.0] * 30)
    ]
    bins = Counter(routing_bin(1 - p["margin"] / 4 if p["margin"] < 4 else 0) for p in pairs)
    assert bins == {2: 3, 1: 10, 0: 30}
    picked = sample_for_audit(pairs, per_domain=9, seed=0)
    by_margin = Counter(p["margin"] for p in picked)
    assert by_margin == {0.2: 3, 2.0: 3, 6.0: 3}  # equal allocation, though bins differ 10x
    assert sample_for_audit(list(reversed(pairs)), 9, 0) == picked  # order-independent
    assert len(sample_for_audit(pairs, per_domain=40, seed=0)) == 40
    # A thin bin hands its share on: 12 picks, only 3 in the high bin.
    assert Counter(p["margin"] for p in sample_for_audit(pairs, 12, 0))[0.2] == 3


def _label_studio_full(tasks):
    return [
        {
            "id": i,
            "data": t["data"],
            "annotations": [
                {
                    "id": 100 + i,
                    "completed_by": 1,
                    "was_cancelled": False,
                    "result": [
                        {"from_name": "preference", "to_name": "prompt", "type": "choices",
                         "value": {"choices": [ab_label(t["data"]["prefgen"]["a_is"],
                                                        verdict(t["data"]["prefgen"]["pair_id"]))]}}
                    ],
                },
                {"id": 200 + i, "was_cancelled": True, "result": [
                    {"from_name": "preference", "value": {"choices": ["B is much better"]}}]},
            ],
            "predictions": [],
        }
        for i, t in enumerate(tasks)
    ]  # fmt: skip


def _label_studio_min(tasks):
    return [
        {**t["data"], "id": i, "annotator": 1,
         "preference": ab_label(t["data"]["prefgen"]["a_is"], verdict(t["data"]["prefgen"]["pair_id"]))}
        for i, t in enumerate(tasks)
    ]  # fmt: skip


def _argilla_nested(records):
    out = []
    for r in records:
        label = ab_label(r["metadata"]["a_is"], verdict(r["id"]))
        answers = [{"value": label, "user_id": "u1"}, {"value": label, "user_id": "u2"}]
        out.append({**r, "responses": {"preference": answers}})
    return out


def _argilla_flat(records):
    out = []
    for r in records:
        label = ab_label(r["metadata"]["a_is"], verdict(r["id"]))
        flat = {"id": r["id"], "_server_id": "srv", **r["fields"], **r["metadata"]}
        flat.update({"preference.responses": [label, "A is much better"],
                     "preference.responses.users": ["u1", "u2"],
                     "preference.responses.status": ["submitted", "draft"]})  # fmt: skip
        out.append(flat)
    return out


@pytest.mark.parametrize(
    ("fmt", "shape"),
    [
        ("label-studio", _label_studio_full),
        ("label-studio", _label_studio_min),
        ("argilla", _argilla_nested),
        ("argilla", _argilla_flat),
    ],
)
def test_round_trip_merge(run, tmp_path, fmt, shape):
    url = run["url"]
    _, exported = _export(run, tmp_path, fmt, per_domain=5)
    if fmt == "argilla":
        assert all(
            set(r) >= {"id", "fields", "metadata", "responses", "suggestions"} for r in exported
        )
        assert all(set(r["fields"]) == {"prompt", "response_a", "response_b"} for r in exported)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(shape(exported)))
    assert main(["audit", "merge", url, str(labels)]) == 0

    manifest = read_manifest(url)
    audit = manifest["audit"]
    rows = read_rows(url, entry_manifest(audit), "pairs")
    assert len(rows) == len(run["pairs"])  # every pair, audited or not
    original = {p["id"]: p for p in run["pairs"]}
    verdicts = {r["id"]: verdict(r["id"]) for r in rows if r["label_source"] == "human"}
    assert len(verdicts) == len(exported)
    for r in rows:
        before = original[r["id"]]
        if r["label_source"] != "human":
            assert r["label_source"] == "judge" and r["chosen"] == before["chosen"]
            continue
        v = verdicts[r["id"]]
        meta = json.loads(r["meta"])
        assert meta["human"]["labels"] == (
            [v, v] if fmt == "argilla" and shape is _argilla_nested else [v]
        )
        assert r["strength"] == abs(v)
        if v < 0:  # human prefers the judge's rejected: sides swapped
            assert r["chosen"] == before["rejected"] and r["rejected"] == before["chosen"]
            assert r["chosen_model"] == before["rejected_model"]
            assert r["margin"] == pytest.approx(-before["margin"])
            assert score_dict(r["chosen_scores"]) == before["rejected_scores"]
            assert meta["chosen_sample"] == before["meta"]["rejected_sample"]
        else:
            assert r["chosen"] == before["chosen"]
    counts = Counter((v > 0) - (v < 0) for v in verdicts.values())
    assert set(counts) == {-1, 0, 1}  # agreements, ties and flips all exercised
    assert (audit["agree"], audit["ties"], audit["flipped"]) == (counts[1], counts[0], counts[-1])
    assert audit["n"] == len(exported) and audit["agreement"] == pytest.approx(
        counts[1] / len(exported)
    )
    assert audit["unmatched_labels"] == 0 and audit["unusable_items"] == 0
    assert sum(d["n"] for d in audit["per_domain"].values()) == audit["n"]
    assert 0 <= audit["agreement_weighted"] <= 1
    assert manifest["shards"] == run["manifest"]["shards"]  # original tables untouched


def test_label_parsing_and_unusable_items():
    assert [label_strength(c) for c in CHOICES] == [-3, -2, -1, 0, 1, 2, 3]
    assert label_strength({"choices": ["B is better"]}) == 2
    assert label_strength("A") == -2 and label_strength(3) == 3
    assert (
        label_strength("maybe") is None
        and label_strength(True) is None
        and label_strength(7) is None
    )
    items = [
        {"data": {"prefgen": {"pair_id": "p1", "a_is": "rejected"}}, "preference": "A is better"},
        {"data": {"prefgen": {"pair_id": "p2", "a_is": "chosen"}}, "preference": "A is better"},
        {"data": {"prefgen": {"pair_id": "p3", "a_is": "chosen"}}},  # skipped by the annotator
        {"data": {}, "preference": "A is better"},  # lost its mapping
    ]
    labels, unusable = read_labels(items)
    assert labels == {"p1": [-2], "p2": [2]} and unusable == 2


def test_apply_label_and_weighted_agreement():
    pair = {"id": "x", "domain": "chat", "chosen": "c", "rejected": "r", "chosen_score": 8.0,
            "rejected_score": 3.0, "margin": 5.0, "strength": 3, "judge_agreement": 1.0,
            "chosen_scores": {}, "rejected_scores": {}, "meta": {}}  # fmt: skip
    tie = apply_label(pair, [1, -1])
    assert tie["strength"] == 0 and tie["chosen"] == "c" and tie["label_source"] == "human"
    flipped = apply_label(pair, [-3, -2])
    assert (
        flipped["chosen"] == "r" and flipped["strength"] == 3 and flipped["judge_agreement"] == 0.0
    )
    assert flipped["meta"]["judge_strength"] == -3 and flipped["meta"]["human"]["flipped"]
    # Two strata: 1 labelled pair standing for 90 pairs agrees, 1 standing for 10 does not.
    a = apply_label(dict(pair, id="a"), [2])
    b = apply_label(dict(pair, id="b", margin=0.5), [-2])
    population = Counter({("chat", a["meta"]["human"]["routing_bin"]): 90,
                          ("chat", b["meta"]["human"]["routing_bin"]): 10})  # fmt: skip
    stats = agreement_stats([a, b], population)
    assert stats["agreement"] == 0.5 and stats["agreement_weighted"] == pytest.approx(0.9)


def test_an_export_can_take_only_the_pairs_one_labeller_made(run, tmp_path):
    from prefgen.curation.audit import export_audit

    judged = {p["id"] for p in run["pairs"] if p["label_source"] == "judge"}
    assert judged  # the built run's pairs are judge-labelled
    out = str(tmp_path / "judged.json")
    summary = export_audit(run["url"], 1000, "argilla", out, label_source="judge")
    assert summary["of_pairs"] == len(judged) == summary["items"]
    items = json.loads((tmp_path / "judged.json").read_text())
    assert {i["metadata"]["pair_id"] for i in items} == judged
    none = export_audit(run["url"], 1000, "argilla", out, label_source="reward_model")
    assert none["items"] == none["of_pairs"] == 0
