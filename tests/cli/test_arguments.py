"""Options and `key=value` overrides in any order, through the real command line.

Nothing here runs a pipeline: each command is stopped at the first step after parsing (config
validation, or the cluster connection), and what stopped it proves what was parsed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import QUICKSTART, ROOT, free_port

from prefgen.cli import main

REWARD = ROOT / "pipelines" / "reward.yaml"


def _prefgen(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_submit_takes_overrides_after_options(capsys):
    # the override after --address reaches the config: its typo is what stops the command
    rc, err = _prefgen(
        capsys, "submit", QUICKSTART, "--address", _nowhere(), "generate.max_tokenz=8"
    )
    assert rc == 2
    assert "nothing submitted" in err and "generate.max_tokenz" in err


def test_submit_overrides_apply_in_command_line_order(capsys, tmp_path):
    # limit=0 is invalid; the later limit=1 wins, so the config passes and only connecting fails
    rc, err = _prefgen(
        capsys,
        "submit",
        QUICKSTART,
        "limit=0",
        "--address",
        _nowhere(),
        f"output.path={tmp_path}",
        "--no-wait",
        "limit=1",
    )
    assert rc == 2 and "cannot reach the Ray dashboard" in err, err
    rc, err = _prefgen(capsys, "submit", QUICKSTART, "limit=1", "--address", _nowhere(), "limit=0")
    assert rc == 2 and "key 'limit'" in err and "nothing submitted" in err, err


def test_submit_in_a_real_process_parses_interleaved_arguments(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "prefgen.cli", "submit", str(QUICKSTART), "--address", _nowhere()]
        + [f"output.path={tmp_path}", "--pip", "extra==1.0", "limit=2"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "unrecognized arguments" not in done.stderr
    assert "cannot reach the Ray dashboard" in done.stderr


def test_run_and_train_rm_take_overrides_anywhere_after_config(capsys, tmp_path):
    rc, err = _prefgen(capsys, "run", QUICKSTART, f"output.path={tmp_path}", "limit=0")
    assert rc == 2 and "key 'limit'" in err
    rc, err = _prefgen(
        capsys, "train-rm", REWARD, f"data.path={tmp_path}", f"output.path={tmp_path}", "epochs=0"
    )
    assert rc == 2 and "key 'epochs'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", QUICKSTART, "limit=2", "--limit", "3"],  # not an option of run
        ["submit", QUICKSTART, "--address", "http://x:8265", "limit=2", "stray"],  # not key=value
        ["train-rm", REWARD, "epochs=1", "--fast"],
        ["status", "runs/x", "limit=2"],  # status takes no overrides
    ],
)
def test_anything_else_left_over_is_a_usage_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and argv[-1] in err
    assert f"prefgen {argv[0]}" in err  # the usage of the command that was mistyped
