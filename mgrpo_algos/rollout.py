"""The batched rollout engine: N queries x K rollouts of an AEC env in lockstep.

At every tick the engine looks at each live episode, finds the agent to act, and
gathers the pending requests of each *policy object* into one ``generate`` call
(all ``main`` turns of every episode together, all ``searcher`` turns together; or
all of them together when the roles share one policy). It then steps every env with
its agent's text.

Each agent call (main's episode, or one sub-agent invocation) becomes one
:class:`~mgrpo_algos.buffer.Trajectory`: the chat-template tokens of every message
of the call, in order, with the agent's own completions masked in. The rewards come
from the env's ``infos`` at the end of the episode (``outcome`` for main, the per-call
records for sub-agents), which is all the engine reads of the env besides the
PettingZoo API.

A call whose context would outgrow the model is cut: it is marked ``truncated``, no
more tokens are added to it, and the engine answers for the agent with empty
actions, which the env counts against the agent's budget until it ends the call.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mgrpo_algos.buffer import Trajectory
from mgrpo_algos.policies.base import Policy
from mgrpo_algos.policies.sampling import logit_temperature

Script = Callable[[Any], str]
"""A scripted actor: gets the env (whose ``agent_selection`` is to act), returns its text."""


def check_role_temperature(value: Any) -> None:
    """``role_temperature``: role -> a finite sampling temperature > 0."""
    if not isinstance(value, dict):
        raise ValueError(f"role_temperature must be a dict of role -> temperature, got {value!r}")
    for role, t in value.items():
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < t < math.inf):
            raise ValueError(f"role_temperature[{role!r}] must be a finite number > 0, got {t!r}")


@dataclass
class RolloutConfig:
    """Sampling settings of the rollout engine.

    Attributes:
        max_new_tokens: Tokens one agent turn may generate.
        temperature: Sampling temperature (> 0).
        role_temperature: Sampling temperature per role, overriding ``temperature``
            for it (e.g. ``{"searcher": 1.5}``).
        top_p: Nucleus sampling mass in (0, 1].
        top_k: Keep the k most likely tokens (0 = all).
        system_prompts: Optional system message per role, put before its first message.
        prefix_cache: Let the policy keep each call's KV cache between its turns (a
            policy with ``release``), so a turn only prefills its new message.
    """

    max_new_tokens: int = 48
    temperature: float = 1.0
    role_temperature: dict[str, float] = field(default_factory=dict)
    top_p: float = 1.0
    top_k: int = 0
    system_prompts: dict[str, str] = field(default_factory=dict)
    prefix_cache: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        check_role_temperature(self.role_temperature)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0, got {self.top_k!r}")


@dataclass
class EpisodeRecord:
    """What one rollout ended with.

    ``infos`` holds every agent's final ``infos`` (``outcome`` for main, the per-call
    records ``calls`` for each sub-agent role), from which a learner may score the
    rollout with its own reward weights.
    """

    group_id: int
    rollout_id: int
    seed: int
    correct: bool
    reward: float
    num_invocations: int
    end_reason: str
    agent_turns: int
    infos: dict[str, dict] = field(default_factory=dict)


@dataclass
class RolloutResult:
    """Trajectories of a collection, the episodes' outcomes and where the time went.

    ``outputs`` counts the outputs each role's policy sampled, ``cut`` those that
    ended at ``max_new_tokens`` without a stop token (role -> count).
    """

    trajectories: list[Trajectory]
    episodes: list[EpisodeRecord]
    generated_tokens: int
    env_seconds: float
    generate_seconds: float
    wall_seconds: float
    outputs: dict[str, int] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(np.mean([e.correct for e in self.episodes])) if self.episodes else 0.0

    @property
    def invocations(self) -> list[int]:
        """d_k of every rollout, in order."""
        return [e.num_invocations for e in self.episodes]

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass
class _Call:
    """An open or finished agent call being recorded."""

    agent: str
    invocation: int
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: int = 0
    truncated: bool = False
    ended_on_stop: bool = True
    version: int | None = None  # the oldest weight version that sampled its tokens

    def extend(self, ids: Sequence[int], generated: bool, logprobs: Sequence[float] = ()) -> None:
        self.ids.extend(ids)
        self.mask.extend([1 if generated else 0] * len(ids))
        self.logprobs.extend(logprobs if logprobs else [0.0] * len(ids))


@dataclass
class _Slot:
    env: Any
    group_id: int
    rollout_id: int
    seed: int
    calls: list[_Call] = field(default_factory=list)
    open: dict[str, _Call] = field(default_factory=dict)
    final_infos: dict[str, dict] | None = None
    agent_turns: int = 0


class RolloutEngine:
    """Runs episodes of an AEC env with one policy (or script) per role.

    Args:
        env_fn: Builds a fresh env (one per concurrent episode; reused across calls).
        policies: Role -> policy. Roles may share one policy object (then their
            requests are batched together). Scripted roles still need a policy for
            their tokenizer.
        config: Sampling settings.
        scripts: Role -> scripted actor; those roles act by script, not by sampling
            (used for demonstrations and for frozen expert sub-agents).
    """

    def __init__(
        self,
        env_fn: Callable[[], Any],
        policies: Mapping[str, Policy],
        config: RolloutConfig | None = None,
        scripts: Mapping[str, Script] | None = None,
    ) -> None:
        self.env_fn = env_fn
        self.policies = dict(policies)
        self.config = config or RolloutConfig()
        self.scripts = dict(scripts or {})
        probe = env_fn()
        missing = [a for a in probe.possible_agents if a not in self.policies]
        if missing:
            raise ValueError(
                f"no policy for role(s) {missing}; expected a policy for each of "
                f"{list(probe.possible_agents)}, got {sorted(self.policies)}"
            )
        self._envs: list[Any] = [probe]

    def _env(self, i: int) -> Any:
        while len(self._envs) <= i:
            self._envs.append(self.env_fn())
        return self._envs[i]

    # ------------------------------------------------------------------ collect
    def collect(
        self,
        seeds: Sequence[int],
        group_size: int,
        *,
        generator: torch.Generator | None = None,
    ) -> RolloutResult:
        """Plays ``group_size`` rollouts of each query (env seed) in lockstep.

        Args:
            seeds: One env seed per query; rollouts of a query share its seed, so
                they face the same question and world.
            group_size: K, the rollouts per query.
            generator: Seeds the sampling (reproducible collections).

        Returns:
            The trajectories, the episode records and timing.
        """
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        t0 = time.perf_counter()
        timers = {"env": 0.0, "generate": 0.0, "tokens": 0, "outputs": Counter(), "cut": Counter()}
        slots = []
        for q, seed in enumerate(seeds):
            for k in range(group_size):
                env = self._env(len(slots))
                tick = time.perf_counter()
                env.reset(seed=int(seed))
                timers["env"] += time.perf_counter() - tick
                slots.append(_Slot(env, q, k, int(seed)))
        live = list(slots)
        while live:
            # one batch per (policy, temperature): roles of one model at one temperature
            requests: dict[tuple[int, float], list[tuple[_Slot, _Call]]] = defaultdict(list)
            for slot in live:
                self._prepare(slot, requests, timers)
            for batch in requests.values():
                self._generate(batch, timers, generator)
            live = [s for s in slots if s.final_infos is None]
        if self.config.prefix_cache:
            for policy in {id(p): p for p in self.policies.values()}.values():
                if hasattr(policy, "release"):
                    policy.release()  # entries are keyed by this collection's calls
        trajectories = [t for s in slots for t in self._trajectories(s)]
        return RolloutResult(
            trajectories=trajectories,
            episodes=[self._record(s) for s in slots],
            generated_tokens=int(timers["tokens"]),
            env_seconds=timers["env"],
            generate_seconds=timers["generate"],
            wall_seconds=time.perf_counter() - t0,
            outputs=dict(timers["outputs"]),
            cut=dict(timers["cut"]),
        )

    def _prepare(self, slot: _Slot, requests: dict, timers: dict) -> None:
        """Advances ``slot`` to its next model request (scripted and cut turns act at once)."""
        while slot.final_infos is None:
            env = slot.env
            tick = time.perf_counter()
            agent = env.agent_selection
            obs, _, term, trunc, info = env.last()
            timers["env"] += time.perf_counter() - tick
            if term or trunc:
                self._finish(slot, timers)
                return
            call = self._observe(slot, agent, str(obs), info)
            if agent in self.scripts:
                text = self.scripts[agent](env)
                policy = self.policies[agent]
                if not call.truncated:
                    call.extend([*policy.encode(text), policy.eos_id], generated=True)
                self._act(slot, call, text, timers)
                continue
            if call.truncated:
                self._act(slot, call, "", timers)
                continue
            temperature = self.config.role_temperature.get(agent, self.config.temperature)
            requests[id(self.policies[agent]), temperature].append((slot, call))
            return

    def _observe(self, slot: _Slot, agent: str, obs: str, info: dict) -> _Call:
        """Appends the agent's new message to its call (opening a call when one starts).

        A message that would leave no room for ``max_new_tokens`` in the model's
        context is not appended: the call is marked truncated instead.
        """
        policy = self.policies[agent]
        call = slot.open.get(agent)
        if call is None or info.get("new_call", False):
            call = _Call(agent, int(info.get("invocation", 0)))
            slot.open[agent] = call
            slot.calls.append(call)
            messages = []
            if agent in self.config.system_prompts:
                messages.append({"role": "system", "content": self.config.system_prompts[agent]})
            messages.append({"role": "user", "content": obs})
            new = policy.encode_chat(messages, add_generation_prompt=True)
        elif call.truncated:
            return call
        else:
            new = [] if call.ended_on_stop else [policy.eos_id]
            new += policy.encode_message({"role": "user", "content": obs})
        if len(call.ids) + len(new) + self.config.max_new_tokens > policy.max_positions:
            call.truncated = True
        else:
            call.extend(new, generated=False)
        return call

    def _generate(
        self, batch: list[tuple[_Slot, _Call]], timers: dict, generator: torch.Generator | None
    ) -> None:
        policy = self.policies[batch[0][1].agent]
        cfg = self.config
        tick = time.perf_counter()
        kwargs = {}
        if self.config.prefix_cache and hasattr(policy, "release"):
            # one cache entry per open call: the next turn only prefills its new message
            kwargs["sessions"] = [(id(slot), id(call)) for slot, call in batch]
        out = policy.generate(
            [call.ids for _, call in batch],
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.role_temperature.get(batch[0][1].agent, cfg.temperature),
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            generator=generator,
            **kwargs,
        )
        timers["generate"] += time.perf_counter() - tick
        timers["tokens"] += out.num_tokens
        agent = batch[0][1].agent
        timers["outputs"][agent] += len(out)
        timers["cut"][agent] += sum(not f for f in out.finished)
        version = out.policy_version
        for i, (slot, call) in enumerate(batch):
            if version is not None:
                call.version = version if call.version is None else min(call.version, version)
            call.extend(out.completion_ids[i], generated=True, logprobs=out.logprobs[i])
            call.ended_on_stop = out.finished[i]
            self._act(slot, call, out.texts[i], timers)

    def _act(self, slot: _Slot, call: _Call, text: str, timers: dict) -> None:
        call.turns += 1
        slot.agent_turns += 1
        tick = time.perf_counter()
        slot.env.step(text)
        timers["env"] += time.perf_counter() - tick

    def _finish(self, slot: _Slot, timers: dict) -> None:
        """Records every agent's final info, then steps the finished agents out."""
        env = slot.env
        tick = time.perf_counter()
        slot.final_infos = {a: dict(i) for a, i in env.infos.items()}
        while env.agents:
            env.step(None)
        timers["env"] += time.perf_counter() - tick

    # ------------------------------------------------------------------ records
    def _trajectories(self, slot: _Slot) -> list[Trajectory]:
        infos = slot.final_infos or {}
        out = []
        for call in slot.calls:
            if call.turns == 0 or not call.ids:
                continue  # nothing was generated, or nothing fitted in the context
            subtask = ""
            if call.agent == "main" or "outcome" in infos.get(call.agent, {}):
                reward = float(infos[call.agent]["outcome"]["reward"])
            else:
                record = infos.get(call.agent, {}).get("calls", [])[call.invocation]
                reward = float(record["reward"])
                subtask = str(record.get("subtask") or "")
            out.append(
                Trajectory(
                    agent=call.agent,
                    group_id=slot.group_id,
                    rollout_id=slot.rollout_id,
                    invocation=call.invocation,
                    input_ids=np.asarray(call.ids, dtype=np.int64),
                    action_mask=np.asarray(call.mask, dtype=np.int8),
                    old_logprobs=np.asarray(call.logprobs, dtype=np.float32),
                    reward=reward,
                    truncated=call.truncated,
                    num_turns=call.turns,
                    policy_version=call.version,
                    temperature=logit_temperature(
                        self.config.role_temperature.get(call.agent, self.config.temperature)
                    ),
                    subtask=subtask,
                )
            )
        return out

    def _record(self, slot: _Slot) -> EpisodeRecord:
        infos = slot.final_infos or {}
        main = next(a for a in infos if "outcome" in infos[a])
        outcome = infos[main]["outcome"]
        return EpisodeRecord(
            group_id=slot.group_id,
            rollout_id=slot.rollout_id,
            seed=slot.seed,
            correct=bool(outcome["correct"]),
            reward=float(outcome["reward"]),
            num_invocations=int(outcome["num_invocations"]),
            end_reason=str(outcome.get("end_reason", "")),
            agent_turns=slot.agent_turns,
            infos=infos,
        )


class SingleAgentAEC:
    """Presents a single-agent Gymnasium text env through the AEC calls the engine uses.

    The one agent is named ``"main"`` (it holds the main agent's reward and outcome),
    so the GRPO learner can run the single-agent baseline with the same engine.
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self.possible_agents = ["main"]
        self.agents: list[str] = []
        self.agent_selection = "main"

    @property
    def unwrapped(self) -> Any:
        return self.env.unwrapped

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        obs, info = self.env.reset(seed=seed, options=options)
        self._last = (obs, 0.0, False, False, {**info, "new_call": True})
        self.agents = ["main"]
        self.infos = {"main": self._last[4]}

    def last(self, observe: bool = True):
        return self._last

    def step(self, action: Any) -> None:
        _, _, term, trunc, _ = self._last
        if term or trunc:
            if action is not None:
                raise ValueError("the episode is over: the only valid action is None")
            self.agents = []
            return
        obs, reward, term, trunc, info = self.env.step(action)
        self._last = (obs, float(reward), term, trunc, {**info, "new_call": False})
        self.infos = {"main": self._last[4]}

    def oracle_action(self) -> str:
        return self.env.unwrapped.oracle_action()


def expert_script(env: Any) -> str:
    """The env's scripted expert as a rollout-engine script."""
    return env.unwrapped.oracle_action()
