"""The metrics file: one line per step, never mixing two runs."""

from __future__ import annotations

import pytest

from mgrpo_algos.metrics import MetricsWriter, wilson_interval


def test_steps_append_and_read_back(tmp_path) -> None:
    writer = MetricsWriter(tmp_path)
    writer.write({"step": 1, "success_rate": 0.5})
    writer.write({"step": 2, "success_rate": 0.75})
    assert [m["success_rate"] for m in writer.read()] == [0.5, 0.75]


def test_a_second_run_into_the_same_directory_is_refused(tmp_path) -> None:
    MetricsWriter(tmp_path).write({"step": 1})
    again = MetricsWriter(tmp_path)
    with pytest.raises(ValueError, match="already holds step 1 of another run"):
        again.write({"step": 1})
    assert len(again.read()) == 1  # nothing of the old run was lost


def test_resuming_truncates_then_continues(tmp_path) -> None:
    writer = MetricsWriter(tmp_path)
    for step in (1, 2, 3):
        writer.write({"step": step})
    resumed = MetricsWriter(tmp_path)
    resumed.truncate(2)
    resumed.write({"step": 3, "again": True})
    assert [m["step"] for m in resumed.read()] == [1, 2, 3]
    assert resumed.read()[-1]["again"] is True


def test_metrics_need_a_step(tmp_path) -> None:
    with pytest.raises(ValueError, match="'step'"):
        MetricsWriter(tmp_path).write({"loss": 1.0})


def test_wilson_interval_brackets_the_rate() -> None:
    lo, hi = wilson_interval(3, 200)
    assert 0 < lo < 3 / 200 < hi < 0.05
    assert wilson_interval(0, 20)[0] == 0.0
