"""Result cells of ``benchmarks/coordination.py`` and the summary rebuilt from them.

A cell is one (task, regime, arm, seed) run, written as one JSON file as soon as the
run ends, named ``<env>-<task>-<regime>-<arm>-s<seed>.json``: ``task`` is the
difficulty, followed by ``+name=value`` for every other env argument the run set
(``research_v0-medium+doc_ref=title-improvable-mgrpo-s0.json``). It holds ``key``
(every setting the run's figures depend on: env and its arguments, the regime's
handicap, model size, SFT recipe, steps, queries, group, learning rate, loss,
evaluation size, arm, seed), the full settings, the warm start it started from and
that warm start's held-out evaluation (``start``), the training curve, the
evaluations (``end`` with its 95% Wilson interval), the wall and CPU seconds, the
machine and the provenance (package versions, code version).

A rerun skips a cell whose file holds the same ``key``; a file with another key is
moved to ``replaced/`` and the cell runs again.

The summary reads the cells alone. Per (task, regime) and arm: the pooled success
over seeds with its 95% Wilson interval, the success of each seed, and the paired
difference to ``main-only``: the mean over the seeds both arms ran of the per-seed
differences, with a 95% Student-t interval over those differences (``t_{0.975, k-1}
* sd / sqrt(k)`` for k seeds; none with one seed). The interval treats the seeds as
the replicates: it includes the seed-to-seed spread of training, not only the
evaluation's sampling noise. Next to it, the regime's diagnosis (from the warm
start's evaluation, when the run had ``--diagnose``) against the preconditions of the
improvable regime; for cells run without it, the record ``--diagnose-only`` wrote in
``diagnoses/<env>-<task>-<regime>.json`` when its key (the warm start's and the
evaluation's settings) matches theirs. A diagnosed regime with no cells gets its
diagnosis alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from math import nan
from pathlib import Path
from typing import Any

import numpy as np

from mgrpo_algos.metrics import wilson_interval

ARMS = (
    "mgrpo",
    "main-only",
    "single",
    "shared",
    "mgrpo-subtask",
    "mgrpo-alternate",
    "no-sync",
)
"""Every arm of the benchmark, in the order tables list them."""
REFERENCE_ARM = "main-only"
PRECONDITIONS: tuple[tuple[str, str, float], ...] = (
    ("gap", "expert-sub minus warm-sub success", 0.20),
    ("differing", "same-subtask sub-agent groups that differ", 0.50),
    ("expert_subs", "success with expert sub-agents", 0.60),
)
"""(name, what it is, lower bound) of each precondition of the improvable regime."""


# --------------------------------------------------------------------------- cells
def cell_name(env: str, task: str, regime: str, arm: str, seed: int) -> str:
    return f"{env}-{task}-{regime}-{arm}-s{seed}"


def canonical(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples as lists)."""
    return json.loads(json.dumps(obj))


def key_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"steps 4 != 2, lr ..."``: the settings of ``new`` that differ from ``old``."""
    old, new = canonical(old), canonical(new)
    diffs = [
        f"{k} {new.get(k)} != {old.get(k)}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    return ", ".join(diffs) or "none"


def cell_done(path: Path, key: dict[str, Any]) -> bool:
    """Whether ``path`` holds a finished cell with this ``key``; prints which and why."""
    if not path.is_file():
        return False
    old = json.loads(path.read_text()).get("key", {})
    if old == canonical(key):
        print(f"{path.name}: done earlier with the same settings, skipped", flush=True)
        return True
    print(f"{path.name}: done earlier under other settings ({key_difference(old, key)}): rerun")
    return False


def write_cell(path: Path, record: dict[str, Any]) -> None:
    """Writes one cell; a file there with another key moves to ``replaced/`` first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("key") != canonical(record["key"]):
            aside = path.parent / "replaced"
            aside.mkdir(exist_ok=True)
            stamp = str(old.get("finished", "earlier")).replace(":", "")
            path.rename(aside / f"{path.stem}-{stamp}.json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)  # a half-written file never looks like a finished cell


DIAGNOSES = "diagnoses"
"""The subdirectory of the cells directory that holds ``--diagnose-only`` records."""


def write_diagnosis(cells_dir: Path, record: dict[str, Any]) -> Path:
    """Writes a regime's diagnosis as ``diagnoses/<name>.json`` (another key: replaced)."""
    path = cells_dir / DIAGNOSES / f"{record['diagnosis']}.json"
    write_cell(path, record)
    return path


def read_diagnoses(cells_dir: Path) -> dict[str, dict[str, Any]]:
    """``"<env>-<task>-<regime>"`` -> its ``--diagnose-only`` record, when there is one."""
    directory = cells_dir / DIAGNOSES
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    out = {}
    for path in paths:
        record = json.loads(path.read_text())
        if "preconditions" not in record or "key" not in record:
            raise ValueError(f"{path} is not a regime diagnosis: it lacks preconditions or key")
        out[record["diagnosis"]] = {**record, "file": f"{DIAGNOSES}/{path.name}"}
    return out


def diagnosis_fits(record: dict[str, Any], cells: Iterable[dict[str, Any]]) -> bool:
    """Whether a diagnosis was measured on the warm start (and evaluation) of ``cells``."""
    return all(c.get("key", {}).get(k) == v for c in cells for k, v in record["key"].items())


def other_diagnosis(record: dict[str, Any], cell_key: dict[str, Any]) -> dict[str, Any]:
    """A diagnosis of another warm start than a group's cells', and how its settings differ."""
    theirs = {k: cell_key.get(k) for k in record["key"]}
    return {
        **record["preconditions"],
        "file": record["file"],
        "differs": key_difference(theirs, record["key"]),
    }


def read_cells(directory: Path) -> list[dict[str, Any]]:
    """Every cell in ``directory`` (not its ``replaced/``), by file name."""
    if not directory.is_dir():
        raise ValueError(f"no cells directory at {directory}; run the benchmark first")
    cells = []
    for path in sorted(directory.glob("*.json")):
        cell = json.loads(path.read_text())
        missing = [k for k in ("env", "task", "regime", "arm", "seed", "end") if k not in cell]
        if missing:
            raise ValueError(f"{path} is not a coordination cell: it lacks {missing}")
        cells.append({**cell, "file": path.name})
    return cells


# --------------------------------------------------------------------------- one run's report
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


def print_diagnosis(diagnosis: dict[str, dict[str, dict[str, float]]]) -> None:
    print()
    print("which role limits success (held-out success as played / with expert sub-agents /")
    print("with an expert main; sub-agent calls that returned the fact asked for):")
    for arm, per_seed in diagnosis.items():
        for seed, d in per_seed.items():
            accuracy = "  ".join(
                f"{k.removesuffix('_accuracy')} {v:.3f}"
                for k, v in d.items()
                if k.endswith("_accuracy")
            )
            print(
                f"{arm:<11}{seed:>6}  {d['as_played']:.3f} / {d.get('expert_subs', nan):.3f}"
                f" / {d.get('expert_main', nan):.3f}   {accuracy}"
            )
    print()
    print("what the sub-agents' groups hold: share of R_S's variance between subtasks,")
    print("share of same-subtask groups whose calls differ in outcome; sampled-token NLL:")
    for arm, per_seed in diagnosis.items():
        for seed, d in per_seed.items():
            parts = [f"main nll {d.get('main_nll_per_token', nan):.4f}"]
            for key in d:
                if key.endswith("_between_subtask_share"):
                    role = key.removesuffix("_between_subtask_share")
                    parts.append(
                        f"{role}: between {d[key]:.2f}, differing "
                        f"{d[f'{role}_subtask_groups_differing']:.2f}, "
                        f"nll {d[f'{role}_nll_per_token']:.4f}"
                    )
            print(f"{arm:<11}{seed:>6}  " + "   ".join(parts))


# --------------------------------------------------------------------------- statistics
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


def regime_diagnosis(start: dict[str, Any]) -> dict[str, Any] | None:
    """The improvable regime's preconditions measured on a warm start's evaluation.

    Needs the evaluation's ``roles`` (``--diagnose``); None without it. ``differing``
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


# --------------------------------------------------------------------------- summary
def arm_order(arm: str) -> int:
    """Where ``arm`` stands in tables: the order of ``ARMS``, arms unknown here last."""
    return ARMS.index(arm) if arm in ARMS else len(ARMS)


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


def summarise_group(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: pooled and per-seed success, the difference to main-only, wall time."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        arms.setdefault(c["arm"], []).append(c)
    rates = {arm: {c["seed"]: c["end"]["success_rate"] for c in cs} for arm, cs in arms.items()}
    out: dict[str, Any] = {"arms": {}}
    for arm, cs in arms.items():
        wins, n = sum(c["end"]["successes"] for c in cs), sum(c["end"]["n"] for c in cs)
        row = {
            "seeds": [c["seed"] for c in cs],
            "success": wins / n,
            "ci95": list(wilson_interval(wins, n)),
            "successes": wins,
            "n": n,
            "per_seed": {str(k): v for k, v in rates[arm].items()},
            "start": cs[0]["start"]["success_rate"] if "start" in cs[0] else None,
            "wall_minutes": float(np.mean([c["wall_seconds"] for c in cs])) / 60,
        }
        if arm != REFERENCE_ARM and REFERENCE_ARM in rates:
            row["minus_main_only"] = paired_difference(rates[arm], rates[REFERENCE_ARM])
        out["arms"][arm] = row
    # the multi-agent warm start's (the shared arm's own warm start only when it is alone)
    multi = sorted(cells, key=lambda c: c.get("warm_start", {}).get("kind") != "multi")
    starts = [c["start"] for c in multi if c["arm"] != "single" and "roles" in c.get("start", {})]
    out["diagnosis"] = regime_diagnosis(starts[0]) if starts else None
    out["settings"], out["note"] = shared_settings(cells)
    out["handicap"] = cells[0].get("handicap", {})
    return out


def _interval(ci: list[float] | None) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "(one seed: no interval)"


def group_markdown(name: str, g: dict[str, Any], png: str | None) -> list[str]:
    """One (task, regime)'s section of ``summary.md``."""
    s = g["settings"]
    handicap = ", ".join(f"{k} {v}" for k, v in g["handicap"].items()) or "none"
    if s.get("sft_sub_epochs"):  # a longer SFT budget for the sub-agents
        handicap += f"; sub-agents' SFT {s['sft_sub_epochs']} more epochs at {s['sft_sub_lr']:g}"
    lines = [f"## {name}", ""]
    lines.append(
        f"env arguments {s.get('env_kwargs')}; sub-agent handicap: {handicap}; "
        f"tiny-{s.get('size')}; {s.get('steps')} steps x {s.get('queries')} queries x "
        f"{s.get('group')} rollouts per run; held-out evaluation of {s.get('eval_episodes')} "
        "episodes per seed."
    )
    if g["note"]:
        lines += ["", f"Note: {g['note']}."]
    lines += [
        "",
        "| arm | seeds | success, pooled (95% Wilson) | per seed | minus main-only, "
        "paired by seed (95% t) | warm start | min per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, r in g["arms"].items():
        per_seed = " / ".join(f"{v:.3f}" for v in r["per_seed"].values())
        d = r.get("minus_main_only")
        diff = f"{d['mean']:+.3f} {_interval(d['ci95'])}" if d and d["mean"] is not None else ""
        start = f"{r['start']:.3f}" if r["start"] is not None else ""
        lines.append(
            f"| {arm} | {len(r['seeds'])} | {r['success']:.3f} [{r['ci95'][0]:.3f}, "
            f"{r['ci95'][1]:.3f}] (n={r['n']}) | {per_seed} | {diff} | {start} | "
            f"{r['wall_minutes']:.1f} |"
        )
    lines += [""] + diagnosis_markdown(g["diagnosis"])
    other = g.get("other_diagnosis")
    if other:
        lines += [
            "",
            f"Another warm start of this regime was diagnosed (`{other['file']}`, by "
            f"`--diagnose-only`); no cell here was trained from it. Its settings that differ "
            f"(its value != the cells'): {other['differs']}.",
            "",
        ]
        lines += preconditions_table(other)
    if png:
        lines += ["", f"![{name}]({png})"]
    return lines + [""]


def diagnosis_markdown(d: dict[str, Any] | None) -> list[str]:
    """The regime's diagnosis against the improvable regime's preconditions."""
    if d is None:
        return [
            "Diagnosis of the regime: not measured (run with `--diagnose`, or the same "
            "command with `--diagnose-only`)."
        ]
    where = f" (`{d['file']}`, by `--diagnose-only`)" if d.get("file") else ""
    return [
        f"Diagnosis of the regime{where} (the multi-agent warm start, before training), "
        "against the preconditions of the improvable regime:",
        "",
        *preconditions_table(d),
    ]


def preconditions_table(d: dict[str, Any]) -> list[str]:
    """A diagnosis's table of the preconditions, each met or not, and how many are."""
    lines = ["| precondition | measured | needed | |", "|---|---|---|---|"]
    for name, what, bound in PRECONDITIONS:
        value = "not measured" if d[name] is None else f"{d[name]:.3f}"
        lines.append(
            f"| {what} | {value} | >= {bound:.2f} | {'met' if d['met'][name] else 'not met'} |"
        )
    met = sum(bool(v) for v in d["met"].values())
    verdict = "All preconditions met" if d["all_met"] else f"{met} of {len(d['met'])} met"
    lines += ["", f"{verdict}."]
    return lines


def plot_group(name: str, cells: list[dict[str, Any]], path: Path) -> bool:
    """Training success per step (mean over seeds, min-max band), final evaluations."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    arms: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        arms.setdefault(c["arm"], []).append(c)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=(3, 2))
    for i, (arm, cs) in enumerate(arms.items()):
        plot_arm(left, right, i, arm, cs)
    left.set(xlabel="episodes trained on", ylabel="success rate", title="training (per step)")
    left.set_ylim(bottom=-0.01, top=max(0.05, left.get_ylim()[1]))
    left.legend(fontsize=7)
    right.set_xticks(range(len(arms)), list(arms), rotation=30, ha="right")
    right.set(ylabel="success rate", title="held-out eval, 95% CI\n(square: warm start; dot: seed)")
    k = cells[0]["key"]
    per_run = k["steps"] * k["queries"] * k["group"]
    handicap = ", ".join(f"{h} {v}" for h, v in cells[0].get("handicap", {}).items())
    fig.suptitle(
        f"{name} ({handicap or 'no handicap'}), tiny-{k['size']}, {per_run} episodes per run"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_arm(left: Any, right: Any, i: int, arm: str, cells: list[dict[str, Any]]) -> None:
    color = f"C{i}"
    per_step = cells[0]["key"]["queries"] * cells[0]["key"]["group"]
    steps = min(len(c["curve"]) for c in cells)
    curves = np.array([[p["success_rate"] for p in c["curve"][:steps]] for c in cells])  # (S, T)
    # a step's success is that of the episodes it collects before its update
    x = np.array([p["episodes"] for p in cells[0]["curve"][:steps]]) - per_step  # (T,)
    if steps:
        left.plot(x, curves.mean(0), ".-", color=color, label=f"{arm} (train)")
        left.fill_between(x, curves.min(0), curves.max(0), color=color, alpha=0.2)
    start = cells[0].get("start")
    if start:
        y, (lo, hi) = start["success_rate"], start["ci95"]
        right.errorbar(
            [i - 0.3], [y], yerr=[[y - lo], [hi - y]], fmt="s", mfc="none", color=color, capsize=3
        )
        evals = min(len(c["evals"]) for c in cells)
        ex = [0] + [e["step"] * per_step for e in cells[0]["evals"][:evals]]
        ey = [y] + list(
            np.mean([[e["success_rate"] for e in c["evals"][:evals]] for c in cells], 0)
        )
        left.plot(ex, ey, "o--", color=color, mfc="none", label=f"{arm} (held-out eval)")
    for j, c in enumerate(cells):
        y, (lo, hi) = c["end"]["success_rate"], c["end"]["ci95"]
        xj = i + (j - (len(cells) - 1) / 2) * 0.15
        right.errorbar([xj], [y], yerr=[[y - lo], [hi - y]], fmt="o", color=color, capsize=3)


def write_summary(cells_dir: Path, out_dir: Path | None = None) -> dict[str, Any]:
    """Rebuilds ``summary.md`` and one PNG per (task, regime) from the cells alone.

    Args:
        cells_dir: Holds the cell files.
        out_dir: Where ``summary.md`` and the PNGs go (default: ``cells_dir``'s parent).

    Returns:
        Per group its summary, and the paths written.
    """
    out_dir = out_dir or cells_dir.parent
    cells = read_cells(cells_dir)
    groups = group_cells(cells)
    repo = Path(__file__).resolve().parent.parent
    shown = cells_dir.resolve()
    shown = shown.relative_to(repo) if shown.is_relative_to(repo) else shown
    lines = [
        "# Coordination results, rebuilt from the cells",
        "",
        f"Rebuilt by `python benchmarks/coordination.py --summary --cells {shown}` from "
        f"{len(cells)} cells; no figure here is typed in by hand. Success rates are on held-out "
        "episodes; the paired difference is a Student-t interval over the per-seed "
        "differences (benchmarks/coordination_cells.py).",
        "",
    ]
    diagnoses = read_diagnoses(cells_dir)
    summaries, plots = {}, []
    for name, cs in groups.items():
        summaries[name] = summarise_group(cs)
        record = diagnoses.pop(name, None)
        if record and diagnosis_fits(record, cs):
            if summaries[name]["diagnosis"] is None:
                summaries[name]["diagnosis"] = {**record["preconditions"], "file": record["file"]}
        elif record:  # a warm start of this regime that no cell here was trained from
            summaries[name]["other_diagnosis"] = other_diagnosis(record, cs[0].get("key", {}))
        png = out_dir / f"{name}.png"
        plotted = plot_group(name, cs, png)
        plots += [str(png)] if plotted else []
        lines += group_markdown(name, summaries[name], png.name if plotted else None)
    for name, record in diagnoses.items():  # regimes diagnosed, with no cells (yet)
        summaries[name] = {"diagnosis": {**record["preconditions"], "file": record["file"]}}
        lines += [f"## {name}", "", "No cells: the regime is diagnosed, its grid not run.", ""]
        lines += diagnosis_markdown(summaries[name]["diagnosis"]) + [""]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text("\n".join(lines))
    return {
        "groups": summaries,
        "summary": str(out_dir / "summary.md"),
        "plots": plots,
        "text": "\n".join(lines),
    }
