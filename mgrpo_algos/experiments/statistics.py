"""The figures of a grid, from its cells alone: intervals, paired differences, preconditions.

Per (task, regime) and arm: the pooled success over seeds with its 95% Wilson
interval, the success of each seed, and the paired difference to ``main-only``: the
mean over the seeds both arms ran of the per-seed differences, with a 95% Student-t
interval over those differences (``t_{0.975, k-1} * sd / sqrt(k)`` for k seeds; none
with one seed). The interval treats the seeds as the replicates: it includes the
seed-to-seed spread of training, not only the evaluation's sampling noise.

The regime's diagnosis (from a warm start's evaluation with ``diagnose``) is read
against the preconditions of the improvable regime (`PRECONDITIONS`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from mgrpo_algos.experiments.arms import REFERENCE_ARM, arm_order
from mgrpo_algos.metrics import wilson_interval

PRECONDITIONS: tuple[tuple[str, str, float], ...] = (
    ("gap", "expert-sub minus warm-sub success", 0.20),
    ("differing", "same-subtask sub-agent groups that differ", 0.50),
    ("expert_subs", "success with expert sub-agents", 0.60),
)
"""(name, what it is, lower bound) of each precondition of the improvable regime."""


# --------------------------------------------------------------------------- intervals
def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom.

    Solves ``CDF(t) = 0.975`` by bisection; the CDF integrates the density from 0
    by Simpson's rule (error far below the printed 3 decimals).
    """
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def upper_half(t: float) -> float:  # P(0 < T < t)
        x = np.linspace(0.0, t, 4001)  # (4001,)
        pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(x**2 / df))  # (4001,)
        h = t / 4000
        return float(h / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum()))

    lo, hi = 0.0, 64.0  # t_{0.975, 1} = 12.71
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if upper_half(mid) < 0.475 else (lo, mid)
    return (lo + hi) / 2


def paired_difference(arm: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """Mean per-seed difference ``arm - reference`` over shared seeds, 95% t-interval.

    Returns:
        ``mean``, ``ci95`` (None with fewer than two shared seeds) and ``seeds``.
    """
    seeds = sorted(set(arm) & set(reference))
    d = np.array([arm[k] - reference[k] for k in seeds])  # (k,)
    if len(d) == 0:
        return {"mean": None, "ci95": None, "seeds": []}
    mean = float(d.mean())
    if len(d) < 2:
        return {"mean": mean, "ci95": None, "seeds": seeds}
    half = t_quantile_975(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return {"mean": mean, "ci95": [mean - half, mean + half], "seeds": seeds}


# --------------------------------------------------------------------------- one run's cells
def by_arm(arms: Iterable[str], runs: list[dict]) -> dict[str, list[dict]]:
    """Arm -> its cells, by seed, in the order of ``arms``."""
    out = {
        arm: sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"]) for arm in arms
    }
    return {arm: rs for arm, rs in out.items() if rs}


def summarise(arms: Iterable[str], runs: list[dict]) -> dict[str, Any]:
    """Final success and 95% interval per arm and seed; mean and pooled interval per arm."""
    out: dict[str, Any] = {"success": {}, "ci95": {}, "mean": {}, "pooled_ci95": {}, "start": {}}
    for arm, rs in by_arm(arms, runs).items():
        out["success"][arm] = {str(r["seed"]): r["end"]["success_rate"] for r in rs}
        out["ci95"][arm] = {str(r["seed"]): r["end"]["ci95"] for r in rs}
        out["mean"][arm] = float(np.mean([r["end"]["success_rate"] for r in rs]))
        wins, n = sum(r["end"]["successes"] for r in rs), sum(r["end"]["n"] for r in rs)
        out["pooled_ci95"][arm] = list(wilson_interval(wins, n))
        out["start"][arm] = rs[0]["start"]["success_rate"]
        diagnosis = {str(r["seed"]): diagnosis_of(r["end"]) for r in rs if "roles" in r["end"]}
        if diagnosis:
            out.setdefault("diagnosis", {})[arm] = {
                "start": diagnosis_of(rs[0]["start"]),
                **diagnosis,
            }
    return out


def diagnosis_of(evaluation: dict) -> dict[str, float]:
    """Success as played, with expert sub-agents, with an expert main; sub-call accuracy."""
    out = {"as_played": evaluation["success_rate"]}
    for name, e in evaluation.get("roles", {}).items():
        out[name] = e["success_rate"]
    for role, stats in evaluation.get("sub_calls", {}).items():
        out[f"{role}_accuracy"] = stats["accuracy"]
        out[f"{role}_calls_per_episode"] = stats["calls"] / evaluation["n"]
    for role, stats in evaluation.get("signal", {}).items():
        out.update({f"{role}_{k}": v for k, v in stats.items()})
    return out


# --------------------------------------------------------------------------- the regime
def regime_diagnosis(start: dict[str, Any]) -> dict[str, Any] | None:
    """The improvable regime's preconditions measured on a warm start's evaluation.

    Needs the evaluation's ``roles`` (``diagnose``); None without it. ``differing``
    is the mean over sub-agent roles of ``subtask_groups_differing`` (None when the
    learning-signal probe is missing).
    """
    roles = start.get("roles", {})
    if "expert_subs" not in roles:
        return None
    expert = roles["expert_subs"]["success_rate"]
    differing = [
        v["subtask_groups_differing"]
        for role, v in start.get("signal", {}).items()
        if role != "main" and "subtask_groups_differing" in v
    ]
    out: dict[str, Any] = {
        "warm_sub": start["success_rate"],
        "expert_subs": expert,
        "gap": expert - start["success_rate"],
        "differing": float(np.mean(differing)) if differing else None,
    }
    out["met"] = {
        name: out[name] is not None and out[name] >= bound for name, _, bound in PRECONDITIONS
    }
    out["all_met"] = all(out["met"].values())
    return out


# --------------------------------------------------------------------------- groups of cells
def group_cells(cells: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``"<env>-<task>-<regime>"`` -> its cells, by arm and seed."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault(f"{c['env']}-{c['task']}-{c['regime']}", []).append(c)
    return {
        name: sorted(cs, key=lambda c: (arm_order(c["arm"]), c["seed"]))
        for name, cs in sorted(groups.items())
    }


def shared_settings(cells: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """The settings the cells share (arm, seed aside) and a note on those that differ."""
    per_arm = ("arm", "seed", "alternate")
    keys = [{k: v for k, v in c.get("key", {}).items() if k not in per_arm} for c in cells]
    common = {k: v for k, v in keys[0].items() if all(x.get(k) == v for x in keys)}
    differing = sorted({k for x in keys for k in x} - set(common))
    note = f"cells run under different {', '.join(differing)}" if differing else None
    return common, note


def arm_row(cells: list[dict[str, Any]], rates: dict[str, dict[int, float]]) -> dict[str, Any]:
    """One arm's line of a group: pooled and per-seed success, start, minutes per run."""
    arm = cells[0]["arm"]
    wins, n = sum(c["end"]["successes"] for c in cells), sum(c["end"]["n"] for c in cells)
    row = {
        "seeds": [c["seed"] for c in cells],
        "success": wins / n,
        "ci95": list(wilson_interval(wins, n)),
        "successes": wins,
        "n": n,
        "per_seed": {str(k): v for k, v in rates[arm].items()},
        "start": cells[0]["start"]["success_rate"] if "start" in cells[0] else None,
        "wall_minutes": float(np.mean([c["wall_seconds"] for c in cells])) / 60,
    }
    if arm != REFERENCE_ARM and REFERENCE_ARM in rates:
        row["minus_main_only"] = paired_difference(rates[arm], rates[REFERENCE_ARM])
    return row


def summarise_group(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: pooled and per-seed success, the difference to main-only, wall time."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        arms.setdefault(c["arm"], []).append(c)
    rates = {arm: {c["seed"]: c["end"]["success_rate"] for c in cs} for arm, cs in arms.items()}
    out: dict[str, Any] = {"arms": {arm: arm_row(cs, rates) for arm, cs in arms.items()}}
    # the multi-agent warm start's (the shared arm's own warm start only when it is alone)
    multi = sorted(cells, key=lambda c: c.get("warm_start", {}).get("kind") != "multi")
    starts = [c["start"] for c in multi if c["arm"] != "single" and "roles" in c.get("start", {})]
    out["diagnosis"] = regime_diagnosis(starts[0]) if starts else None
    out["settings"], out["note"] = shared_settings(cells)
    out["handicap"] = cells[0].get("handicap", {})
    return out
