"""Reporting: success rates with confidence intervals, machine info, a JSON result line."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import warnings
from typing import Any

from mgrpo_algos.provenance import provenance


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% by default).

    Args:
        successes: Number of successes.
        n: Number of trials (> 0).
        z: Normal quantile (1.96 for 95%).

    Returns:
        (low, high), both within [0, 1].
    """
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def format_rate(successes: int, n: int) -> str:
    """``"0.420 [0.352, 0.491] (n=200)"``: a success rate with its 95% interval."""
    lo, hi = wilson_interval(successes, n)
    return f"{successes / n:.3f} [{lo:.3f}, {hi:.3f}] (n={n})"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    info.update(provenance())
    return info


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def emit(result: dict[str, Any]) -> None:
    """Prints the result as the script's last line: one JSON object."""
    print(json.dumps({**result, "machine": machine()}, sort_keys=True))


class MetricsWriter:
    """Writes one JSON object per step to ``<out_dir>/metrics.jsonl`` (and TensorBoard).

    Names are namespaced (``reward/main/mean``, ``loss/sub``, ``perf/tokens_per_s``).
    TensorBoard event files go to ``<out_dir>/tb`` when the ``tensorboard`` package is
    installed.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        from pathlib import Path

        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        self._last_step: int | None = None
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tb"))
        except ImportError:
            pass

    def write(self, metrics: dict[str, Any]) -> None:
        """Appends one step's metrics as strict JSON; steps must increase through the file.

        A NaN or infinite value is written as ``null`` and counted in the line's
        ``metrics/nonfinite`` (so the file stays valid JSON for every reader).

        Raises:
            ValueError: If ``metrics`` has no ``step``, or the file already holds this
                step or a later one (another run wrote to this directory; resuming
                truncates the file first).
        """
        if "step" not in metrics:
            raise ValueError(f"metrics need a 'step' key, got keys {sorted(metrics)}")
        if self._last_step is None:
            self._last_step = max((m["step"] for m in self.read()), default=None)
        if self._last_step is not None and metrics["step"] <= self._last_step:
            raise ValueError(
                f"{self.path} already holds step {self._last_step} of another run; "
                "resume that run (--resume) or write to a new directory"
            )
        line, nonfinite = strict_json(metrics)
        line["metrics/nonfinite"] = nonfinite
        self._last_step = metrics["step"]
        with self.path.open("a") as f:
            f.write(json.dumps(line, sort_keys=True, allow_nan=False) + "\n")
        if self._tb is not None:
            for key, value in line.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(key, value, metrics["step"])
            self._tb.flush()

    def read(self) -> list[dict[str, Any]]:
        """The lines written so far; a torn last line (a killed run) is skipped with a warning.

        Raises:
            ValueError: A line other than the last is not JSON (naming the file and line).
        """
        if not self.path.exists():
            return []
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                if i == len(lines) - 1:
                    warnings.warn(
                        f"{self.path}: skipping its torn last line {i + 1} ({err.msg}); "
                        "the run stopped while writing it",
                        stacklevel=2,
                    )
                    break
                raise ValueError(
                    f"{self.path} line {i + 1} is not JSON ({err.msg}): fix or delete that "
                    "line, or start a new run directory"
                ) from err
        return out

    def truncate(self, step: int) -> None:
        """Drops lines after ``step`` (a resumed run rewrites them), and a torn last line."""
        kept = [m for m in self.read() if m["step"] <= step]
        self.path.write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in kept))
        self._last_step = max((m["step"] for m in kept), default=None)


def strict_json(metrics: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``metrics`` with NaN and infinite floats replaced by None, and how many were."""
    out: dict[str, Any] = {}
    nonfinite = 0
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
            nonfinite += 1
        else:
            out[key] = value
    return out, nonfinite
