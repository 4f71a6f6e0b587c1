"""Role actors: one per model of the run, each with its policy, optimiser and schedule.

A :class:`RoleModel` (run as a Ray actor, ``RoleActor``) holds one model: a role's
(``mgrpo``), main's (``main-only``; each frozen sub-agent gets its own actor with no
optimiser), every role's (``shared``) or the single agent's (``grpo``). It serves
the rollout workers' ``generate`` requests with the weights being trained, computes
its update from the samples the driver sends (the embedded learner's own
``Learner.optimise`` and ``Learner.backward``, not a copy: arXiv 2511.13288, sec. 3,
each agent optimised separately), and hands over its part of a checkpoint. With
``lora_rank > 0`` it holds its own copy of the base with its model's adapter alone
(`lora.adapter_policy`), trains the adapter, takes the base with the adapter
disabled as its KL reference, and its checkpoint part is the adapter.

:class:`RemotePolicy` is the `Policy` a rollout worker's engine sees: tokenisation is
local (a copy of the tokenizer), ``generate`` and ``release`` go to the role actor.
The sampling stream is the caller's: the generator's state travels with each request
and comes back advanced, so the draws are the ones the embedded learner makes when
the calls come in the same order.
"""

from __future__ import annotations

import pickle
import tempfile
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
import torch
import transformers

from mgrpo_algos import lora
from mgrpo_algos.buffer import Trajectory
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.base import GenerationOutput, Message
from mgrpo_algos.policies.loading import aligned_weights
from mgrpo_algos.training.config import LearnerConfig
from mgrpo_algos.training.loop import Learner
from mgrpo_algos.training.update import make_deterministic, make_optimizer, with_ref_logprobs

Files = dict[str, bytes]
"""A saved policy directory as relative path -> file contents (it crosses machines)."""


def directory_files(path: Path) -> Files:
    """Every file under ``path`` as relative path -> bytes."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


def write_files(files: Files, path: Path) -> None:
    """Writes what :func:`directory_files` read into ``path``."""
    for name, data in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def policy_files(policy: HFPolicy) -> Files:
    """``policy.save`` as files in memory."""
    with tempfile.TemporaryDirectory() as tmp:
        policy.save(tmp)
        return directory_files(Path(tmp))


def in_aligned_memory(policy: HFPolicy) -> HFPolicy:
    """``policy`` with every CPU tensor of its model 64-byte aligned (`aligned_weights`).

    A model loaded from files is aligned by `HFPolicy.load` already; a LoRA base
    built from shipped files and copies pulled back go through here, so a role
    actor's numbers do not depend on how its weights reached it (docs/distributed.md,
    "Equality with the embedded run").
    """
    aligned_weights(policy.model)
    return policy


def policy_from_files(files: Files) -> HFPolicy:
    """The policy :func:`policy_files` saved, loaded on CPU (:func:`in_aligned_memory`)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_files(files, Path(tmp))
        return in_aligned_memory(HFPolicy.load(tmp))


def lora_base_files(policies: Mapping[str, HFPolicy]) -> Files:
    """The base model under the LoRA views ``policies`` (`AdapterSet.save_base`) as files."""
    with tempfile.TemporaryDirectory() as tmp:
        lora.adapter_set_of(policies).save_base(tmp)
        return directory_files(Path(tmp))


def lora_policy_from_files(
    base: Files, dtype: torch.dtype, state: lora.AdapterState, *, trained: bool
) -> lora.LoRAPolicy:
    """The adapter ``state`` on the base that :func:`lora_base_files` saved, in ``dtype``."""
    with tempfile.TemporaryDirectory() as tmp:
        write_files(base, Path(tmp))
        plain = in_aligned_memory(HFPolicy.load(tmp, dtype=dtype))
    plain.model.name_or_path = ""  # not the temporary directory, gone now (peft records it)
    return lora.adapter_policy(plain, state, trained=trained)


def on_cpu(value: Any) -> Any:
    """``value`` with every tensor moved to the CPU (a GPU actor's state, for the driver)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(v) for v in value)
    return value


def text_info(policy: HFPolicy) -> dict[str, Any]:
    """What a rollout worker needs to tokenise for ``policy``: tokenizer, stop ids, context."""
    return {
        "tokenizer": policy.tokenizer,
        "stop_ids": policy.stop_ids,
        "max_positions": policy.max_positions,
    }


class RoleModel:
    """One model of a run: generation, its update and its checkpoint part.

    Args:
        name: The model's name (``main``, a role, ``shared``): its optimiser's and
            its checkpoint directory's.
        roles: The roles it plays.
        policy: The starting policy (moved to the GPU when the actor has one); with
            ``config.lora_rank > 0`` its adapter (`lora.AdapterState`), put on ``base``.
        config: The run's settings (loss, optimiser, schedule).
        trained: Whether it has an optimiser (False: a frozen sub-agent).
        ref: The KL reference (when ``config.beta > 0``): the initial policy; with
            LoRA the initial adapter's `lora.AdapterState`, added to the actor's own
            model frozen (None: a copy of the adapter it starts with).
        base: With LoRA: the base model's files (:func:`lora_base_files`) and dtype;
            each actor loads its own copy.
        optimizer_state: An optimiser state to continue from (a resumed run).
        scheduler_state: The schedule's state to continue from.
        threads: Torch threads of the actor.
        version: The weights' version: updates applied so far in the run (each
            :meth:`update` adds one); stamped on every generation it serves.
    """

    # the embedded learner's update code, run on this actor's one model
    optimise = Learner.optimise
    backward = Learner.backward

    def __init__(
        self,
        name: str,
        roles: Sequence[str],
        policy: HFPolicy | lora.AdapterState,
        config: LearnerConfig,
        *,
        trained: bool,
        ref: HFPolicy | lora.AdapterState | None = None,
        base: tuple[Files, torch.dtype] | None = None,
        optimizer_state: dict[str, Any] | None = None,
        scheduler_state: dict[str, Any] | None = None,
        threads: int = 1,
        version: int = 0,
    ) -> None:
        torch.set_num_threads(max(1, threads))
        transformers.utils.logging.disable_progress_bar()  # one bar per checkpoint otherwise
        if config.deterministic:
            make_deterministic()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.name, self.config, self.trained = name, config, trained
        if isinstance(policy, lora.AdapterState):
            if base is None:
                raise ValueError(f"the adapter of {name!r} needs its base model's files")
            policy = lora_policy_from_files(*base, policy, trained=trained)
            if config.beta > 0 and trained:  # the reference: the initial adapter, frozen
                ref = lora.initial_reference(policy, ref)
        self.policy = in_aligned_memory(policy.to(device))
        self.policies = {role: self.policy for role in roles}
        self.refs = {name: in_aligned_memory(ref.to(device))} if ref is not None else {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.params: dict[str, list[torch.nn.Parameter]] = {}
        if trained:
            params = [p for p in self.policy.parameters() if p.requires_grad]
            self.params[name] = params
            optimizer, scheduler = make_optimizer(params, config, name)
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
            if scheduler_state is not None:
                scheduler.load_state_dict(scheduler_state)
            self.optimizers[name], self.schedulers[name] = optimizer, scheduler
        self.served: Counter[str] = Counter()
        self.version = version

    def info(self) -> dict[str, Any]:
        """What a rollout worker needs to tokenise for this model (:func:`text_info`)."""
        return text_info(self.policy)

    def generate(
        self,
        caller: str,
        prompts: list[list[int]],
        options: dict[str, Any],
        generator_state: torch.Tensor | None,
        sessions: list[Hashable] | None,
    ) -> tuple[GenerationOutput, torch.Tensor | None]:
        """One batch of completions; returns them and the advanced generator state."""
        generator = None
        if generator_state is not None:
            generator = torch.Generator()
            generator.set_state(generator_state)
        out = self.policy.generate(prompts, generator=generator, sessions=sessions, **options)
        out.policy_version = self.version
        self.served[caller] += 1
        return out, generator.get_state() if generator is not None else None

    def release(self, sessions: list[Hashable] | None) -> None:
        self.policy.release(sessions)

    def requests(self) -> dict[str, int]:
        """Generate calls served so far, per caller (a rollout worker's incarnation)."""
        return dict(self.served)

    def update(self, samples: Mapping[str, list[Trajectory]]) -> dict[str, Any]:
        """``num_iterations`` optimiser steps on the roles' samples (as ``Learner.update``).

        Returns:
            ``stats`` (the last pass's), ``skipped`` (steps skipped over the passes)
            and ``lr`` (the schedule's last learning rates).
        """
        if not self.trained:
            raise ValueError(f"the model {self.name!r} is frozen: it has no optimiser to update")
        cfg = self.config
        if self.refs:
            ref = self.refs[self.name]
            samples = {
                role: with_ref_logprobs(
                    ref, trajs, cfg.max_batch_tokens, shared_prefix=cfg.shared_prefix
                )
                for role, trajs in samples.items()
            }
        stats: dict[str, float] = {}
        skipped = 0.0
        for _ in range(cfg.num_iterations):
            stats = self.optimise(self.name, samples)
            skipped += stats[f"optim/skipped/{self.name}"]
        self.policy.release()  # cached keys and values hold the old weights
        self.version += 1
        return {"stats": stats, "skipped": skipped, "lr": self.last_lr(), "version": self.version}

    def last_lr(self) -> list[float]:
        return self.schedulers[self.name].get_last_lr() if self.trained else []

    def export(self) -> dict[str, Any]:
        """This model's part of a checkpoint: policy and reference files, optimiser state.

        With LoRA the policy's and the reference's files are their adapters' alone
        (the base is the driver's).
        """
        part: dict[str, Any] = {"policy": policy_files(self.policy), "ref": None}
        if self.refs:
            part["ref"] = policy_files(self.refs[self.name])
        if self.trained:
            part["optimizer"] = on_cpu(self.optimizers[self.name].state_dict())
            part["scheduler"] = self.schedulers[self.name].state_dict()
        return part


RoleActor = ray.remote(RoleModel)


class RemotePolicy:
    """The `Policy` a rollout worker plays with: local tokenizer, remote generation.

    Session keys are prefixed with the worker's incarnation, so two workers (or a
    worker and its restarted self) never share a cached conversation, and
    ``release()`` drops this worker's sessions only.

    Args:
        actor: The role actor that generates.
        info: Its :meth:`RoleModel.info`.
        caller: The worker's incarnation tag.

    Attributes:
        bytes_moved: Serialized bytes of the requests sent and replies received.
    """

    def __init__(self, actor: Any, info: Mapping[str, Any], caller: str) -> None:
        self.actor, self.caller = actor, caller
        # a text-only policy: the tokenizer and stop tokens, no model
        self.text = HFPolicy(None, info["tokenizer"], stop_ids=info["stop_ids"])
        self._max_positions = int(info["max_positions"])
        self._sessions: set[Hashable] = set()
        self.bytes_moved = 0

    @property
    def pad_id(self) -> int:
        return self.text.pad_id

    @property
    def eos_id(self) -> int:
        return self.text.eos_id

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return self.text.stop_ids

    @property
    def max_positions(self) -> int:
        return self._max_positions

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_ids: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        sessions: Sequence[Hashable | None] | None = None,
    ) -> GenerationOutput:
        """`Policy.generate` on the role actor; ``generator`` advances as if it ran here."""
        options = {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "stop_ids": None if stop_ids is None else list(stop_ids),
        }
        keys = None
        if sessions is not None:
            keys = [None if s is None else (self.caller, s) for s in sessions]
            self._sessions.update(k for k in keys if k is not None)
        state = generator.get_state() if generator is not None else None
        request = (self.caller, [list(p) for p in prompts], options, state, keys)
        out, new_state = ray.get(self.actor.generate.remote(*request))
        self.bytes_moved += _size(request) + _size((out, new_state))
        if generator is not None:
            generator.set_state(new_state)
        return out

    def release(self, sessions: Iterable[Hashable] | None = None) -> None:
        """Drops this worker's cached sessions on the role actor (all of them with None)."""
        keys = self._sessions if sessions is None else {(self.caller, s) for s in sessions}
        if keys:
            ray.get(self.actor.release.remote(sorted(keys, key=repr)))
        self._sessions -= keys

    def encode(self, text: str) -> list[int]:
        return self.text.encode(text)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.text.decode(ids, skip_special_tokens=skip_special_tokens)

    def encode_chat(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> list[int]:
        return self.text.encode_chat(messages, add_generation_prompt=add_generation_prompt)

    def encode_message(self, message: Message, *, add_generation_prompt: bool = True) -> list[int]:
        return self.text.encode_message(message, add_generation_prompt=add_generation_prompt)

    def logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise TypeError(  # by design: generation-only proxy, the weights are on the actor
            "a rollout worker's RemotePolicy only generates; training log-probs are computed "
            "on the role actor (RoleModel.update)"
        )


def _size(value: Any) -> int:
    """Serialized bytes of ``value`` (what crosses the actor boundary)."""
    return len(pickle.dumps(value, protocol=5))
