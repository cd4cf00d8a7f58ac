"""Progress lines for piped output (pure): rows, rate and time left per stage."""

from __future__ import annotations

from prefgen.run.progress import line


def test_a_line_has_rows_rate_and_eta():
    assert line("final", "judge-j", 12, 36, 24.0) == (
        "prefgen [final] judge-j                  12/36 rows  0.50 rows/s  ETA 48s"
    )


def test_replayed_rows_never_count_past_the_total_and_a_finished_stage_says_done():
    assert line("final", "pair", 40, 36, 10.0).endswith("36/36 rows  3.60 rows/s  done")


def test_no_rows_yet_has_no_eta_and_long_waits_read_in_minutes_and_hours():
    assert line("00-gen", "generate-a", 0, 10, 5.0).endswith("0/10 rows  0.00 rows/s  ETA ?")
    assert line("p", "s", 1, 11, 300.0).endswith("ETA 50m00s")
    assert line("p", "s", 1, 101, 300.0).endswith("ETA 8h20m")
