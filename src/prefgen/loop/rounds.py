"""`prefgen loop`: rounds of prompts -> pairs -> reward model -> endpoint -> routed pairs.

Round k (1-based), under `output`:
1. `round-k/`: the pipeline on the round's prompts. From round 2 on, its `route` stage scores
   every response with the previous round's reward model over HTTP and only the prompts it is
   unsure of go to the LLM judges (`prefgen.judges.route`).
2. `rm/round-k/`: a reward model trained on every round's pairs so far plus `seed_pairs`,
   evaluated on its held-out split (`prefgen train-rm`).
3. The endpoint: that model deployed as the Ray Serve app on `serve.host:port`, replacing the
   previous version (Serve starts the new replica, then drains the old one).

Each finished step is recorded in `loop.json` (written atomically, after the step's own
outputs are committed), so a loop killed anywhere continues where it stopped: a half-done
run resumes from its committed shards, a half-done training from its last checkpoint, and
the endpoint is deployed again whenever a round still needs it. Each round's run keeps its
own manifest, which records the reward model version that routed it (`route.model_version`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from prefgen.config import load
from prefgen.config.loop import LoopConfig
from prefgen.data import ray_cluster, storage

STATE_FILE = "loop.json"
APP_NAME = "prefgen-rm"


def load_loop(path: str, overrides: list[str] | None = None) -> LoopConfig:
    return load(path, overrides, LoopConfig)


class Loop:
    """One loop's state on storage and its steps; `run()` does what is left."""

    def __init__(self, cfg: LoopConfig, log: Callable[[str], None] = print):
        self.cfg, self.log = cfg, log
        self.fs, self.root = storage.filesystem(cfg.output, cfg.storage_options)
        if storage.is_local(self.fs):
            self.root = os.path.abspath(self.root)
        self.state = self._read_state()
        self.served: str | None = None  # model URL the endpoint serves in this process

    # -- state -------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        path = storage.join(self.root, STATE_FILE)
        if self.fs.exists(path):
            with self.fs.open(path, "rb") as f:
                state = json.loads(f.read())
            if state.get("name") != self.cfg.name:
                raise ValueError(f"{self.cfg.output} holds loop {state.get('name')!r}")
            return state
        return {"name": self.cfg.name, "rounds": []}

    def _save(self) -> None:
        self.fs.makedirs(self.root, exist_ok=True)
        data = json.dumps(self.state, indent=2, default=str).encode()
        storage.write_bytes_atomic(self.fs, storage.join(self.root, STATE_FILE), data)

    def _record(self, k: int) -> dict[str, Any]:
        while len(self.state["rounds"]) < k:
            self.state["rounds"].append({"round": len(self.state["rounds"]) + 1})
        return self.state["rounds"][k - 1]

    def url(self, *parts: str) -> str:
        return storage.join(self.cfg.output, *parts)

    # -- the steps ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cluster = ray_cluster.connect(self.cfg.ray.address, self.cfg.ray.num_cpus)
        self.log(f"[loop] {len(self.cfg.rounds)} round(s) into {self.cfg.output}")
        self.log(f"[loop] ray {cluster.describe()}")
        try:
            for k in range(1, len(self.cfg.rounds) + 1):
                record = self._record(k)
                if "run" not in record:
                    record["run"] = self.run_round(k)
                    self._save()
                if self.cfg.audit.per_domain and "audit" not in record:
                    record["audit"] = self.audit_round(k)
                    self._save()
                if "train" not in record:
                    self.stop_endpoint()  # training gets every core; the next run redeploys
                    record["train"] = self.train_round(k)
                    self._save()
            from prefgen.report.loop import write_loop_report

            self.state["report"] = write_loop_report(self.state, self.fs, self.root)
            self._save()
        finally:
            self.stop_endpoint()
        return self.state

    def run_round(self, k: int) -> dict[str, Any]:
        from prefgen.run.pipeline import run
        from prefgen.run.registry import load_pipeline

        rnd = self.cfg.rounds[k - 1]
        out = self.url(f"round-{k}")
        overrides = [
            *self.cfg.pipeline_overrides,
            f"input.path={rnd.input}",
            f"output.path={out}",
            *rnd.overrides,
        ]
        routing = self.route_overrides(k) if k > 1 else None
        if routing:
            overrides += routing["overrides"]
        self.log(f"[loop] round {k}: pipeline on {rnd.input}" + (
            f", routed by {routing['model_version']}" if routing else ""
        ))  # fmt: skip
        result = run(load_pipeline(self.cfg.pipeline, overrides))
        return round_summary(result.manifest, out, routing)

    def audit_round(self, k: int) -> dict[str, Any]:
        """Export round k's judge-labelled pairs, stratified by routing score, for people."""
        from prefgen.curation.audit import export_audit

        a = self.cfg.audit
        out = self.url(f"round-{k}", f"audit-{a.format}.json")
        summary = export_audit(
            self.url(f"round-{k}"), a.per_domain, a.format, out, a.seed,
            self.cfg.storage_options, label_source="judge",
        )  # fmt: skip
        self.log(f"[loop] round {k}: {summary['items']} judged pair(s) out for audit in {out}")
        return {"file": out, **summary}

    def train_round(self, k: int) -> dict[str, Any]:
        from prefgen.reward.train import load_reward_config, train

        data = [self.url(f"round-{i}") for i in range(1, k + 1)] + list(self.cfg.seed_pairs)
        overrides = [
            *self.cfg.reward_overrides,
            f"data.path={json.dumps(data)}",
            f"output.path={self.url('rm', f'round-{k}')}",
        ]
        if self.cfg.continue_training and k > 1:
            overrides.append(f"init_from={self.state['rounds'][k - 2]['train']['model']}")
        self.log(f"[loop] round {k}: reward model on {len(data)} pair source(s)")
        result = train(load_reward_config(self.cfg.reward, overrides), log=self.log)
        return {
            "model": result["model"],
            "n_train": result["n_train"],
            "n_eval": result["n_eval"],
            "eval_accuracy": result["eval_accuracy"],
            "eval_loss": result["eval_loss"],
            "seconds": result["seconds"],
            "resumed_from_step": result["resumed_from_step"],
            "init_from": result["init_from"],
        }

    def route_overrides(self, k: int) -> dict[str, Any]:
        """Serve round k-1's model and route round k with it."""
        from prefgen.serve.app import model_version

        model = self.state["rounds"][k - 2]["train"]["model"]
        base = self.deploy(model)
        version = model_version(model, self.cfg.storage_options)
        route = self.cfg.route
        overrides = [
            "route.kind=reward_model",
            f"route.url={base}",
            f"route.model_version={version}",
            f"route.num_cpus={route.num_cpus}",
        ]
        if route.band is not None:
            overrides.append(f"route.band={route.band!r}")
        if route.judge_share is not None:
            overrides.append(f"route.judge_share={route.judge_share!r}")
        return {"model_version": version, "band": route.band, "overrides": overrides}

    def deploy(self, model: str) -> str:
        """The endpoint serving `model` (a new Serve version of the app if it served another)."""
        from ray import serve

        from prefgen.serve.app import build_app

        s = self.cfg.serve
        base = f"http://{s.host}:{s.port}"
        if self.served == model:
            return base
        if self.served is None:
            serve.start(http_options={"host": s.host, "port": s.port})
        options = {"model": model, "num_cpus": s.num_cpus, "num_threads": s.num_threads}
        options["storage_options"] = self.cfg.storage_options
        serve.run(build_app(options), name=APP_NAME, route_prefix="/")
        self.served = model
        self.log(f"[loop] serving {model} at {base}")
        return base

    def stop_endpoint(self) -> None:
        if self.served is not None:
            from ray import serve

            serve.shutdown()
            self.served = None


def round_summary(manifest: dict, out: str, routing: dict | None) -> dict[str, Any]:
    """What the loop report shows of one round's run (pure, from its manifest)."""
    counts = manifest["counts"]
    routed = counts.get("routed") or {}
    agreement = counts.get("rm_judge_agreement") or {}
    stage_seconds = counts.get("stage_seconds") or {}
    both = agreement.get("both_scored", 0)
    prompts = counts["prompts_ok"]
    judged = routed.get("judges", prompts) if routing else prompts
    return {
        "output": out,
        "prompts": prompts,
        "pairs": counts["pairs"],
        "judged_prompts": judged,
        "settled_by_reward_model": routed.get("reward_model", 0),
        "judged_share": judged / prompts if prompts else None,
        "judge_seconds": round(
            sum(v for k, v in stage_seconds.items() if k.startswith("judge-")), 2
        ),
        "route_seconds": round(stage_seconds.get("route", 0.0), 2),
        "generated_tokens": sum(m.get("tokens", 0) for m in counts["models"].values()),
        "rm_judge_agreement": agreement.get("agree", 0) / both if both else None,
        "both_scored_pairs": both,
        "routed_by": routing["model_version"] if routing else None,
        "band": routing["band"] if routing else None,
        "seconds": manifest["seconds"],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
