"""A cells directory summarised: ``summary.md`` and one PNG per (task, regime), from the cells.

``mgrpo experiment summary`` (and every ``mgrpo experiment run``, at its end) rebuilds
them next to the cells directory; no figure in them is typed in by hand. Per (task,
regime): the settings the cells share, a table per arm (pooled success with its
Wilson interval, each seed's, the paired difference to main-only with its t
interval, the warm start's success, minutes per run: `statistics`), the regime's
diagnosis against the improvable regime's preconditions (from the cells' own warm
start evaluation, or the ``--diagnose-only`` record whose key fits them), and a plot
of training and held-out success. A regime diagnosed and not run gets its diagnosis
alone. The summary covers every cell of the directory, so specs that share one
share its summary.
"""

from __future__ import annotations

from math import nan
from pathlib import Path
from typing import Any

import numpy as np

from mgrpo_algos.experiments.cells import (
    diagnosis_fits,
    other_diagnosis,
    read_cells,
    read_diagnoses,
)
from mgrpo_algos.experiments.statistics import (
    PRECONDITIONS,
    by_arm,
    group_cells,
    summarise,
    summarise_group,
)
from mgrpo_algos.metrics import format_rate

REPO = Path(__file__).resolve().parents[2]
"""Paths under the repository are shown relative to it."""


# --------------------------------------------------------------------------- printed tables
def print_table(name: str, episodes_per_run: int, arms: list[str], runs: list[dict]) -> None:
    """A run's cells of one (task, regime): final success per seed and arm, as they end."""
    print()
    print(f"{name}, {episodes_per_run} episodes per run")
    head = f"{'arm':<11}{'seed':>5}  {'final success (95%)':<34}{'train first->last':>18}"
    print(head + f"{'episodes':>10}{'min':>7}{'start':>8}")
    for arm, rs in by_arm(arms, runs).items():
        for r in rs:
            rate = format_rate(r["end"]["successes"], r["end"]["n"])
            first, last = r["curve"][0]["success_rate"], r["curve"][-1]["success_rate"]
            print(
                f"{arm:<11}{r['seed']:>5}  {rate:<34}{first:>9.3f} ->{last:>6.3f}"
                f"{r['episodes']:>10}{r['wall_seconds'] / 60:>7.1f}"
                f"{r['start']['success_rate']:>8.3f}"
            )
        wins, n = sum(r["end"]["successes"] for r in rs), sum(r["end"]["n"] for r in rs)
        print(f"{arm:<11}{'all':>5}  {format_rate(wins, n):<34}")
    diagnosis = summarise(arms, runs).get("diagnosis", {})
    if diagnosis:
        print_diagnosis(diagnosis)
    print()


def print_diagnosis(diagnosis: dict[str, dict[str, dict[str, float]]]) -> None:
    """Which role limits success, and what the sub-agents' groups hold, per arm and seed."""
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


# --------------------------------------------------------------------------- markdown
def _interval(ci: list[float] | None) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "(one seed: no interval)"


def settings_line(g: dict[str, Any]) -> str:
    """What every cell of a group shares: env, handicap, model, budget, evaluation."""
    s = g["settings"]
    handicap = ", ".join(f"{k} {v}" for k, v in g["handicap"].items()) or "none"
    if s.get("sft_sub_epochs"):  # a longer SFT budget for the sub-agents
        handicap += f"; sub-agents' SFT {s['sft_sub_epochs']} more epochs at {s['sft_sub_lr']:g}"
    return (
        f"env arguments {s.get('env_kwargs')}; sub-agent handicap: {handicap}; "
        f"tiny-{s.get('size')}; {s.get('steps')} steps x {s.get('queries')} queries x "
        f"{s.get('group')} rollouts per run; held-out evaluation of {s.get('eval_episodes')} "
        "episodes per seed."
    )


def arms_table(arms: dict[str, dict[str, Any]]) -> list[str]:
    """The table of a group's arms."""
    lines = [
        "| arm | seeds | success, pooled (95% Wilson) | per seed | minus main-only, "
        "paired by seed (95% t) | warm start | min per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, r in arms.items():
        per_seed = " / ".join(f"{v:.3f}" for v in r["per_seed"].values())
        d = r.get("minus_main_only")
        diff = f"{d['mean']:+.3f} {_interval(d['ci95'])}" if d and d["mean"] is not None else ""
        start = f"{r['start']:.3f}" if r["start"] is not None else ""
        lines.append(
            f"| {arm} | {len(r['seeds'])} | {r['success']:.3f} [{r['ci95'][0]:.3f}, "
            f"{r['ci95'][1]:.3f}] (n={r['n']}) | {per_seed} | {diff} | {start} | "
            f"{r['wall_minutes']:.1f} |"
        )
    return lines


def group_markdown(name: str, g: dict[str, Any], png: str | None) -> list[str]:
    """One (task, regime)'s section of ``summary.md``."""
    lines = [f"## {name}", "", settings_line(g)]
    if g["note"]:
        lines += ["", f"Note: {g['note']}."]
    lines += ["", *arms_table(g["arms"]), "", *diagnosis_markdown(g["diagnosis"])]
    other = g.get("other_diagnosis")
    if other:
        lines += [
            "",
            f"Another warm start of this regime was diagnosed (`{other['file']}`, by "
            f"`--diagnose-only`{_split_note(other)}); no cell here was trained from it. Its "
            f"settings that differ (its value != the cells'): {other['differs']}.",
            "",
        ]
        lines += preconditions_table(other)
    if png:
        lines += ["", f"![{name}]({png})"]
    return lines + [""]


def _split_note(d: dict[str, Any]) -> str:
    """``", on the val split"`` for a diagnosis not measured on the test split."""
    split = d.get("split", "test")
    return "" if split == "test" else f", on the {split} split"


def diagnosis_markdown(d: dict[str, Any] | None) -> list[str]:
    """The regime's diagnosis against the improvable regime's preconditions."""
    if d is None:
        return [
            "Diagnosis of the regime: not measured (run with `diagnose = true` in the spec's "
            "[eval], or `mgrpo experiment run SPEC --diagnose-only`)."
        ]
    where = f" (`{d['file']}`, by `--diagnose-only`{_split_note(d)})" if d.get("file") else ""
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


# --------------------------------------------------------------------------- plots
def plot_group(name: str, cells: list[dict[str, Any]], path: Path) -> bool:
    """Training success per step (mean over seeds, min-max band), final evaluations."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed (pip install -e '.[plot]'): no plot")
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
    """One arm's curves (left) and held-out evaluations (right), in colour ``C{i}``."""
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


# --------------------------------------------------------------------------- the file
def header(cells_dir: Path, out_dir: Path, count: int) -> list[str]:
    """The title (after the directory that holds the summary) and how it was rebuilt."""
    shown = cells_dir.resolve()
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown
    title = out_dir.resolve().name.capitalize() or "Experiment"
    return [
        f"# {title} results, rebuilt from the cells",
        "",
        f"Rebuilt by `mgrpo experiment summary --cells {shown}` from {count} cells; no "
        "figure here is typed in by hand. Success rates are on held-out episodes; the paired "
        "difference is a Student-t interval over the per-seed differences "
        "(mgrpo_algos/experiments/statistics.py).",
        "",
    ]


def attach_diagnosis(summary: dict[str, Any], record: dict | None, cells: list[dict]) -> None:
    """Gives a group the ``--diagnose-only`` record of its regime: its own, or another's."""
    if record and diagnosis_fits(record, cells):
        if summary["diagnosis"] is None:
            summary["diagnosis"] = diagnosis_record(record)
    elif record:  # a warm start of this regime that no cell here was trained from
        other = other_diagnosis(record, cells[0].get("key", {}))
        summary["other_diagnosis"] = {**other, **_split_of(record)}


def diagnosis_record(record: dict[str, Any]) -> dict[str, Any]:
    """A ``--diagnose-only`` record as a group's diagnosis: its preconditions and file."""
    return {**record["preconditions"], "file": record["file"], **_split_of(record)}


def _split_of(record: dict[str, Any]) -> dict[str, str]:
    return {"split": record["split"]} if "split" in record else {}


def write_summary(cells_dir: Path, out_dir: Path | None = None) -> dict[str, Any]:
    """Rebuilds ``summary.md`` and one PNG per (task, regime) from the cells alone.

    Args:
        cells_dir: Holds the cell files.
        out_dir: Where ``summary.md`` and the PNGs go (default: ``cells_dir``'s parent).

    Returns:
        Per group its summary, the paths written, and the text.
    """
    out_dir = out_dir or cells_dir.parent
    cells = read_cells(cells_dir)
    lines = header(cells_dir, out_dir, len(cells))
    diagnoses = read_diagnoses(cells_dir)
    summaries, written = {}, []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, cs in group_cells(cells).items():
        summaries[name] = summarise_group(cs)
        attach_diagnosis(summaries[name], diagnoses.pop(name, None), cs)
        png = out_dir / f"{name}.png"
        plotted = plot_group(name, cs, png)
        written += [str(png)] if plotted else []
        lines += group_markdown(name, summaries[name], png.name if plotted else None)
    for name, record in diagnoses.items():  # regimes diagnosed, with no cells (yet)
        summaries[name] = {"diagnosis": diagnosis_record(record)}
        lines += [f"## {name}", "", "No cells: the regime is diagnosed, its grid not run.", ""]
        lines += diagnosis_markdown(summaries[name]["diagnosis"]) + [""]
    (out_dir / "summary.md").write_text("\n".join(lines))
    return {
        "groups": summaries,
        "summary": str(out_dir / "summary.md"),
        "plots": written,
        "text": "\n".join(lines),
    }
