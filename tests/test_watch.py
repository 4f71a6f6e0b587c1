"""A trained role with no samples is reported, once, with the reason; outputs cut are counted."""

from __future__ import annotations

import logging

import pytest

from mgrpo_algos import MGRPOTrainer
from mgrpo_algos.watch import IdleRoles
from tests.test_mgrpo import SUB, small


def step(main_out=4, main_cut=0, sub_out=0, sub_cut=0, main_calls=4, sub_calls=0) -> dict:
    return {
        "outputs/main": main_out,
        "truncated/main": main_cut,
        "calls/main": main_calls,
        f"outputs/{SUB}": sub_out,
        f"truncated/{SUB}": sub_cut,
        f"calls/{SUB}": sub_calls,
    }


def test_a_role_without_samples_is_reported_once_after_n_steps(caplog) -> None:
    idle = IdleRoles(["main", SUB], max_new_tokens=24, steps=3)
    with caplog.at_level(logging.WARNING, logger="mgrpo"):
        assert idle.observe(step()) == [] and idle.observe(step()) == []
        (message,) = idle.observe(step(main_cut=3))
        assert idle.observe(step()) == []  # once per role
    assert f"role {SUB!r} is trained but has had no sample for 3 steps" in message
    assert (
        "main delegated no call to it; 75% of main's outputs were cut at max_new_tokens=24"
        in message
    )
    assert caplog.records and message in caplog.text
    assert idle.warned == {SUB}


def test_a_step_with_samples_resets_the_count() -> None:
    idle = IdleRoles([SUB], max_new_tokens=8, steps=2)
    assert idle.observe(step()) == []
    assert idle.observe(step(sub_out=2, sub_calls=2)) == []
    assert idle.observe(step()) == []
    (message,) = idle.observe(step())
    assert "main's outputs never held a well-formed call" in message


def test_the_reason_names_a_role_cut_at_its_own_budget() -> None:
    idle = IdleRoles(["main"], max_new_tokens=5, steps=1)
    (message,) = idle.observe(step(main_out=6, main_cut=6, main_calls=0))
    assert "100% of its outputs were cut at max_new_tokens=5 (raise --max-new-tokens)" in message
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        IdleRoles(["main"], max_new_tokens=5, steps=0)


def test_a_run_whose_main_never_delegates_says_so(caplog, capsys) -> None:
    """A tiny random main with 3 tokens an output writes no call: the searcher never trains."""
    trainer = MGRPOTrainer(small(steps=3, max_new_tokens=3, checkpoint_every=0))
    with caplog.at_level(logging.WARNING, logger="mgrpo"):
        history = trainer.train(progress=True)
    assert all(m[f"calls/{SUB}"] == 0 and m["loss/sub"] is None for m in history)
    assert all(
        m["truncated/main"] > 0 and m["outputs/main"] >= m["truncated/main"] for m in history
    )
    assert f"role {SUB!r} is trained but has had no sample for 3 steps" in caplog.text
    assert "main delegated no call to it" in caplog.text
    assert f"untrained={SUB}" in capsys.readouterr().err  # on the progress bar
