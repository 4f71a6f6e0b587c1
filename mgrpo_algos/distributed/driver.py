"""The Ray driver: the embedded learners' step, with the models and rollouts in Ray actors.

:class:`RayMGRPOTrainer` and :class:`RayGRPOTrainer` are the embedded learners
(``MGRPOTrainer``, ``GRPOTrainer``) with three parts moved out of the process:

    collect   ``self.engine`` is a :class:`~.rollout.RayRollouts`: the step's queries
              in slices on the rollout workers, generation on the role actors
    update    each trained model's samples go to its role actor, which steps its
              own optimiser (all models at once); the driver merges their stats
    store     the main side's rewards pass through a :class:`~.store.RayStore` actor

Everything else is the embedded learner's own code, run in the driver: the step
(collect -> score -> store -> align -> advantages -> update -> log), the scoring,
alignment, advantages, metrics, the training loop and the checkpoint layout. With
the same config and seed, one rollout worker and one torch thread everywhere, a Ray
run's metrics (but the ``perf/*`` timings and the Ray-only ``staleness/*`` and
``ray/*``) and weights are bit-identical to those of the embedded run (every
process computes with 64-byte-aligned weights, `aligned_weights`; docs/distributed.md,
"Equality with the embedded run").

The driver builds (or loads) the starting models, as the embedded learner does, and
ships one copy to each role actor; a checkpoint's weights come back from the actors.
``self.policies`` is the driver's snapshot, refreshed by :meth:`pull_policies` (for
evaluation and tests), never trained. With LoRA (``lora_rank > 0``) the driver puts
the base's files in Ray's object store once and sends each role actor its adapter;
each actor loads its own base. Only adapters come back (checkpoints, pulls); the
driver writes ``base/`` from its own copy, which never changes.
``weight_bytes`` counts the weights sent at start and exported since.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ray

from mgrpo_algos import lora
from mgrpo_algos.algorithms.grpo import GRPOTrainer
from mgrpo_algos.algorithms.mgrpo import MGRPOTrainer
from mgrpo_algos.buffer import RolloutBuffer, Trajectory
from mgrpo_algos.evaluate import EvalResult
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.rollout import RolloutResult
from mgrpo_algos.store import StatsStore
from mgrpo_algos.training.checkpoints import save_lora_checkpoint
from mgrpo_algos.training.config import LearnerConfig
from mgrpo_algos.training.scoring import Judge

from . import RoleActorLost
from .roles import RoleActor, lora_base_files, policy_from_files, text_info, write_files
from .rollout import Pending, RayRollouts, WorkerActor, WorkerRestart
from .store import RayStore

logger = logging.getLogger("mgrpo")
"""The run's log (as `mgrpo_algos.watch`): rollout worker restarts are reported here."""

ROLLOUT = "rollout"
"""The ``role_resources`` key of each rollout worker's resources."""
BASE = "<base>"  # key of the LoRA base's object ref among the starting weights (no model's name)


def init_ray(address: str | None) -> bool:
    """Connects to Ray: ``address``, else ``RAY_ADDRESS``, else a local Ray on 2 CPUs.

    Returns:
        Whether this call started Ray (then the caller shuts it down).
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=2, include_dashboard=False)
    return True


class ScheduleView:
    """The driver's view of a role actor's LR schedule: its last rates and state."""

    def __init__(self, last_lr: list[float], state: dict[str, Any]) -> None:
        self.last_lr, self.state = list(last_lr), state

    def get_last_lr(self) -> list[float]:
        return list(self.last_lr)

    def state_dict(self) -> dict[str, Any]:
        return self.state


class RayBackend:
    """What the Ray learners add to an embedded learner (a mixin; put it first).

    Args:
        config: The run's settings (``backend`` must be ``ray``).
        out_dir: As for the embedded learner.
        policies: As for the embedded learner.
        resume: Continue the run in ``out_dir`` (use :meth:`resume`).
        max_restarts: Restarts (and re-runs of the call in flight) of a rollout worker.
        **kwargs: The embedded learner's other arguments (``store``, ``judge`` ...).
    """

    def __init__(
        self,
        config: LearnerConfig,
        out_dir: str | Path | None = None,
        policies: Mapping[str, HFPolicy] | None = None,
        *,
        resume: bool = False,
        max_restarts: int = 3,
        **kwargs: Any,
    ) -> None:
        if config.backend != "ray":
            raise ValueError(
                f"{type(self).__name__} runs backend='ray', got backend={config.backend!r}; "
                "use the embedded learner, or set backend='ray'"
            )
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        super().__init__(config, out_dir, policies=policies, resume=resume, **kwargs)  # type: ignore[call-arg]
        self.max_restarts = max_restarts
        self.models: dict[str, Any] = {}
        self.workers: list[Any] = []
        self.bytes_moved = 0
        self._owns_ray = False
        self._worker_args: Any = None
        self._ahead: dict[int, Pending] = {}  # collections submitted, by step
        self.versions: dict[str, int] = {name: 0 for name in dict.fromkeys(self.names.values())}
        self.weight_bytes = {"start": 0, "exported": 0}
        if not resume:
            self.start()

    # -------------------------------------------------------------- actors
    def _resources(self) -> dict[str, dict[str, float]]:
        names = sorted(set(self.names.values()))
        wrong = sorted(set(self.config.role_resources) - {*names, ROLLOUT})
        if wrong:
            raise ValueError(
                f"role_resources names {wrong}, which this run has not; its models are "
                f"{names} and {ROLLOUT!r} sets each rollout worker's resources"
            )
        return self.config.role_resources

    def start(self) -> None:
        """Starts Ray (if needed) and the actors, from the driver's models and state."""
        if self.models:
            raise ValueError("the actors of this learner are running already")
        resources = self._resources()
        self._owns_ray = init_ray(self.config.ray_address)
        starts = self._starting_weights()
        for name in dict.fromkeys(self.names[r] for r in self.roles):
            roles = [r for r in self.roles if self.names[r] == name]
            res = dict(resources.get(name, {}))
            trained = name in self.groups
            self.models[name] = RoleActor.options(**{"num_cpus": 0, **res}).remote(
                name,
                roles,
                starts.get(name, self.policies[roles[0]]),
                self.config,
                trained=trained,
                # LoRA: the reference adapter's state (the run's initial adapter)
                ref=starts.get(lora.REFERENCE_PREFIX + name) if starts else self.refs.get(name),
                base=starts.get(BASE),
                optimizer_state=self.optimizers[name].state_dict() if trained else None,
                scheduler_state=self.schedulers[name].state_dict() if trained else None,
                threads=int(res.get("num_cpus", 1)),
                version=self.versions.get(name, 0),
            )
        # tokenisers from the driver's copies: workers start while the models load
        first = {self.names[r]: self.policies[r] for r in reversed(self.roles)}
        handles = {n: (m, text_info(first[n])) for n, m in self.models.items()}
        # held for the learner's life: a restarted worker is built from these again
        self._worker_args = ray.put(handles)
        self.workers = [
            WorkerActor.options(
                max_restarts=self.max_restarts,
                max_task_retries=self.max_restarts,
                **{"num_cpus": 0, **resources.get(ROLLOUT, {})},
            ).remote(i, self.config, self.engine.config, self._worker_args, self.names)
            for i in range(self.config.rollout_workers)
        ]
        # every actor started (or its error raised here)
        incarnations = ray.get([w.whoami.remote() for w in self.workers])
        ray.get([m.requests.remote() for m in self.models.values()])
        self.engine = RayRollouts(self.workers, incarnations)
        self.schedulers = {
            n: ScheduleView(s.get_last_lr(), s.state_dict()) for n, s in self.schedulers.items()
        }
        self.optimizers = {}  # they live on the role actors now

    def _starting_weights(self) -> dict[str, Any]:
        """With LoRA: each model's adapter (`lora.AdapterState`), and under ``BASE`` an
        object ref to the base's files and dtype (put once, read by every role actor).

        Empty without LoRA (each role actor is sent its whole policy). Sets
        ``weight_bytes["start"]``: the weights sent (the base counted once).
        """
        if self.config.lora_rank == 0:
            first = {self.names[r]: self.policies[r] for r in reversed(self.roles)}
            self.weight_bytes["start"] = sum(parameter_bytes(p) for p in first.values())
            return {}
        adapters = lora.adapter_set_of(self.policies)
        files = lora_base_files(self.policies)
        starts: dict[str, Any] = {name: adapters.state(name) for name in adapters.names}
        moved = sum(len(data) for data in files.values())
        self.weight_bytes["start"] = moved + sum(a.nbytes for a in starts.values())
        starts[BASE] = ray.put((files, adapters.base.model.dtype))
        return starts

    def close(self) -> None:
        """Ends the actors, and Ray when this learner started it."""
        for actor in [*self.workers, *self.models.values()]:
            ray.kill(actor)
        self.workers, self.models, self._ahead = [], {}, {}
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -------------------------------------------------------------- the step's remote parts
    def collect(self) -> RolloutResult:
        """This step's rollouts; with ``sync="off"`` the next steps' are started first.

        Up to ``max_staleness`` later steps are submitted to the workers before this
        step's are gathered, so the workers play them while the driver scores and
        the role actors update; their samples are then up to that many updates old.
        """
        cfg = self.config
        ahead = cfg.max_staleness if cfg.sync == "off" else 0
        last = max(self.step_idx, min(self.step_idx + ahead, cfg.steps - 1))
        for step in range(self.step_idx, last + 1):
            if step not in self._ahead:
                seeds, generator = self.collection(step)
                self._ahead[step] = self.engine.submit(seeds, cfg.group_size, generator=generator)
        result = self.engine.gather(self._ahead.pop(self.step_idx))
        for event in self.engine.last_restarts:
            logger.warning(self._restart_message(event))
        return result

    def _restart_message(self, event: WorkerRestart) -> str:
        """The log line of a rollout worker found restarted (steps numbered as in the metrics)."""
        queries = event.queries
        return (
            f"rollout worker {event.worker} was restarted (restart {event.restarts} of at "
            f"most {self.max_restarts}); its slice of step {self.step_idx + 1} (queries "
            f"{queries.start}..{queries.stop - 1}) came from the new process, played from the "
            "same seeds and generator state, so the step's rollouts are unchanged"
        )

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        """Every trained model's update on its role actor, all at once (as ``Learner.update``).

        Each sample's staleness (its model's version minus the version that sampled
        it) is reported as ``staleness/mean`` and ``staleness/max``; with
        ``sync="off"``, samples staler than ``max_staleness`` are left out and counted
        in ``staleness/dropped``.
        """
        cfg = self.config
        limit = cfg.max_staleness if cfg.sync == "off" else None
        futures = {}
        ages: list[int] = []
        dropped = 0
        active = self.active_groups()  # type: ignore[attr-defined]
        for name, roles in self.groups.items():
            if name not in active:
                continue
            samples = {}
            for role in roles:
                kept, age = fresh_samples(buffer.get(role), self.versions[name], limit)
                samples[role] = kept
                ages += age
                dropped += len(age) - len(kept)
            if any(samples.values()):
                self.bytes_moved += len(pickle.dumps(samples, protocol=5))
                futures[name] = self.models[name].update.remote(samples)
        stats: dict[str, float] = {}
        skipped = 0.0
        for name, out in zip(futures, ray.get(list(futures.values())), strict=True):
            self.bytes_moved += len(pickle.dumps(out, protocol=5))
            stats.update(out["stats"])
            skipped += out["skipped"]
            self.schedulers[name].last_lr = out["lr"]
            self.versions[name] = out["version"]
        stats["optim/skipped"] = skipped
        stats["staleness/mean"] = float(sum(ages) / len(ages)) if ages else 0.0
        stats["staleness/max"] = float(max(ages, default=0))
        stats["staleness/dropped"] = float(dropped)
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "versions": dict(self.versions)}  # type: ignore[misc]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.versions.update(state.pop("versions", {}))
        super().load_state_dict(state)  # type: ignore[misc]

    def lost_models(self) -> list[str]:
        """The models whose role actor no longer answers."""
        lost = []
        for name, actor in self.models.items():
            try:
                ray.get(actor.requests.remote(), timeout=60)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                lost.append(name)
        return lost

    def train_step(self) -> dict[str, Any]:
        """The embedded learner's step, plus the bytes it moved between processes.

        ``perf/bytes/<part>`` are the serialized sizes of what crossed actor
        boundaries: ``slices`` (driver <-> rollout workers), ``generate`` (workers <->
        role actors), ``updates`` (samples to the role actors, their stats back) and
        ``store`` (rows to and from the store actor); ``perf/bytes_moved`` their sum.
        ``ray/worker_restarts`` counts the rollout workers found restarted in the step
        (each also logged by the ``mgrpo`` logger).
        """
        self.bytes_moved = 0
        store = getattr(self, "store", None)
        before = getattr(store, "bytes_moved", 0)
        with self.role_actors_needed():
            metrics = super().train_step()  # type: ignore[misc]
        parts = {
            **self.engine.traffic,
            "updates": self.bytes_moved,
            "store": getattr(store, "bytes_moved", 0) - before,
        }
        metrics.update({f"perf/bytes/{k}": v for k, v in parts.items()})
        metrics["perf/bytes_moved"] = sum(parts.values())
        metrics["ray/worker_restarts"] = len(self.engine.last_restarts)
        return metrics

    @contextlib.contextmanager
    def role_actors_needed(self) -> Iterator[None]:
        """Turns a Ray error caused by a dead role actor into :class:`RoleActorLost`."""
        try:
            yield
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as err:
            lost = self.lost_models()
            if not lost:
                raise
            raise RoleActorLost(self._lost_message(lost, err)) from err

    def _lost_message(self, lost: list[str], err: BaseException) -> str:
        cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        head = (
            f"the role actor of {', '.join(repr(n) for n in lost)} died at step "
            f"{self.step_idx} ({cause}); its weights and optimiser state since the last "
            "checkpoint are gone, so the run stops"
        )
        if self.out_dir is None:
            return head + " (it has no out_dir, so it cannot be resumed)"
        return f"{head}: continue it with `mgrpo train --resume {self.out_dir}`"

    def pull_policies(self) -> dict[str, HFPolicy]:
        """Role -> a CPU copy of the model playing it now (roles of one model share it).

        With LoRA only the adapters come back, copied into the driver's views (its
        base never changes).
        """
        parts = self._export()
        if self.config.lora_rank > 0:
            for role in self.roles:
                lora.load_adapter_files(self.policies[role], parts[self.names[role]]["policy"])
            return self.policies
        loaded = {name: policy_from_files(part["policy"]) for name, part in parts.items()}
        self.policies = {role: loaded[self.names[role]] for role in self.roles}
        return self.policies

    def evaluate(self, episodes: int | None = None) -> EvalResult:
        """The held-out evaluation of the current models, played in the driver."""
        self.pull_policies()
        return super().evaluate(episodes)  # type: ignore[misc]

    # -------------------------------------------------------------- checkpoints
    def _export(self) -> dict[str, dict[str, Any]]:
        names = list(self.models)
        with self.role_actors_needed():
            parts = ray.get([self.models[n].export.remote() for n in names])
        self.weight_bytes["exported"] += sum(
            len(data) for part in parts for data in part["policy"].values()
        )
        return dict(zip(names, parts, strict=True))

    def save_checkpoint(self) -> Path:
        """``ckpt-<step>`` in the embedded learner's layout, from the role actors' parts."""
        self._parts = self._export()
        for name in self.groups:
            self.schedulers[name].state = self._parts[name]["scheduler"]
        return super().save_checkpoint()  # type: ignore[misc]

    def write_models(self, tmp: Path) -> None:
        """The role actors' policies and references (their files), and LoRA's ``base/``."""
        for name, part in self._parts.items():
            write_files(part["policy"], tmp / "policies" / name)
            if part["ref"] is not None:
                write_files(part["ref"], tmp / "refs" / name)
        (tmp / "policies" / "roles.json").write_text(json.dumps(dict(self.names), indent=2))
        if self.config.lora_rank > 0:  # base/ once, from the driver's copy (never trained)
            save_lora_checkpoint(self.policies, tmp)

    def optimizer_states(self) -> dict[str, Any]:
        return {
            "optimizers": {n: self._parts[n]["optimizer"] for n in self.groups},
            "schedulers": {n: self._parts[n]["scheduler"] for n in self.groups},
        }

    @classmethod
    def resume(cls, out_dir: str | Path, *, steps: int | None = None, **kwargs: Any) -> Any:
        """Continues a run from its newest complete checkpoint (``Learner.resume``), on Ray."""
        trainer = super().resume(out_dir, steps=steps, **kwargs)  # type: ignore[misc]
        trainer.start()
        return trainer


def parameter_bytes(policy: HFPolicy) -> int:
    """Bytes of ``policy``'s weights (what shipping it moves, less the pickling)."""
    return sum(t.numel() * t.element_size() for t in policy.model.state_dict().values())


def fresh_samples(
    trajs: list[Trajectory], version: int, limit: int | None
) -> tuple[list[Trajectory], list[int]]:
    """The samples at most ``limit`` updates older than ``version``, and every sample's age.

    A sample's age is ``version - policy_version`` (0 when it records no version);
    ``limit=None`` keeps every sample.
    """
    ages = [0 if t.policy_version is None else version - t.policy_version for t in trajs]
    if limit is None:
        return list(trajs), ages
    return [t for t, age in zip(trajs, ages, strict=True) if age <= limit], ages


class RayMGRPOTrainer(RayBackend, MGRPOTrainer):
    """M-GRPO (or ``main-only``, ``shared``) on Ray; see the module docstring.

    Takes ``MGRPOTrainer``'s arguments (``store``, ``judge`` ...) and ``max_restarts``.
    The rewards pass through a store actor unless a ``store`` or ``store_path`` is given.
    """

    def __init__(
        self,
        config: LearnerConfig,
        out_dir: str | Path | None = None,
        policies: Mapping[str, HFPolicy] | None = None,
        store: StatsStore | None = None,
        judge: Judge | None = None,
        *,
        resume: bool = False,
        max_restarts: int = 3,
    ) -> None:
        self._own_store = store is None and getattr(config, "store_path", None) is None
        super().__init__(
            config,
            out_dir,
            policies,
            resume=resume,
            max_restarts=max_restarts,
            store=store,
            judge=judge,
        )

    def start(self) -> None:
        super().start()
        if self._own_store:
            self.store = RayStore()

    def close(self) -> None:
        if self._own_store and isinstance(self.store, RayStore):
            self.store.close()
        super().close()


class RayGRPOTrainer(RayBackend, GRPOTrainer):
    """Single-agent GRPO on Ray (one role actor); takes ``GRPOTrainer``'s arguments."""


__all__ = [
    "RayBackend",
    "RayGRPOTrainer",
    "RayMGRPOTrainer",
    "fresh_samples",
    "init_ray",
]
