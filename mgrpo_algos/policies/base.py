"""The `Policy` protocol every learner and the rollout engine program against.

A policy turns chat messages into token ids, samples batched completions with
their log-probabilities, and recomputes differentiable log-probabilities of
whole sequences for training. `HFPolicy` (in `mgrpo_algos.policies.hf`) is the
implementation for transformers causal language models.

Log-probabilities, everywhere in this package, are those of the policy being
optimised: the *tempered* model distribution ``log_softmax(logits / T)`` at the
temperature ``T`` the tokens were sampled at (``T = 1`` for greedy picks), without
top-k/top-p truncation, as in TRL and verl. The GRPO importance ratio
``pi_theta / pi_old`` compares two such numbers for the same token, so the old
log-probs stored at sampling time, the new ones from `Policy.logprobs` and the KL
reference's must all be computed at the same temperature (GRPO, Shao et al. 2024,
eq. 3; DAPO, Yu et al. 2025, sec. 2). `Policy.logprobs` takes that temperature.

Sessions: `Policy.generate` takes an optional key per prompt (a conversation
id). A policy may keep per-key state, such as the key/value cache of the
conversation so far, to avoid recomputing a shared prefix on the next turn;
results must not depend on it. Such state is only valid for the weights it
was computed with, so callers `Policy.release` the keys when conversations end
and release everything after each optimiser step.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

Message = Mapping[str, str]
"""One chat message: ``{"role": ..., "content": ...}``."""


@dataclass
class GenerationOutput:
    """Batched sampling result, one entry per prompt in the order given.

    Attributes:
        completion_ids: Sampled token ids, without the prompt; they include the
            stop token when one was produced (then it is the last id).
        logprobs: Log-probability of each sampled token under the tempered
            distribution ``log_softmax(logits / T)`` at the sampling temperature
            ``T`` (the raw logits when greedy), without top-k/top-p truncation.
            Same lengths as ``completion_ids``.
        texts: The completions decoded without special tokens.
        finished: ``True`` where the completion ended on a stop token, ``False``
            where it hit ``max_new_tokens``.
        policy_version: The version of the weights that sampled the batch, where a
            trained model's server counts its updates (a Ray role actor); None for a
            local policy.
    """

    completion_ids: list[list[int]]
    logprobs: list[list[float]]
    texts: list[str]
    finished: list[bool]
    policy_version: int | None = None

    def __len__(self) -> int:
        return len(self.completion_ids)

    @property
    def num_tokens(self) -> int:
        """Total number of generated tokens over the batch."""
        return sum(len(ids) for ids in self.completion_ids)


@runtime_checkable
class Policy(Protocol):
    """A trainable language-model policy with a chat format.

    Token sequences are plain lists of ids; batches of sequences of different
    lengths are left-padded with `pad_id` and come with an attention mask.
    """

    @property
    def pad_id(self) -> int:
        """Padding token id."""
        ...

    @property
    def eos_id(self) -> int:
        """End-of-turn token id (the default stop token)."""
        ...

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Token ids that end a completion by default."""
        ...

    @property
    def max_positions(self) -> int:
        """Longest sequence (prompt plus completion) the model accepts."""
        ...

    @property
    def device(self) -> torch.device:
        """Device of the parameters; inputs to `logprobs` go there."""
        ...

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
        """Sample one completion per prompt, all prompts in one batch.

        Args:
            prompts: Token ids of each prompt (different lengths allowed).
            max_new_tokens: Most tokens to sample per prompt.
            temperature: Softmax temperature for sampling; ``0`` means greedy.
            top_p: Nucleus sampling mass in ``(0, 1]``; ``1`` disables it.
            top_k: Keep the ``k`` most likely tokens; ``0`` disables it, ``1`` is greedy.
            stop_ids: Tokens that end a completion; ``None`` uses `stop_ids`,
                an empty sequence never stops early.
            generator: Random generator; the same seed gives the same tokens.
            sessions: Optional key per prompt (``None``: no key), distinct
                within a call. A policy may cache per-key work (such as the
                keys and values of the conversation so far) and reuse it when
                the same key's next prompt extends it. Results are the same with
                or without keys (to float rounding). Policies that cache nothing
                accept and ignore them.

        Returns:
            The completions, their log-probs and texts (see `GenerationOutput`).
        """
        ...

    def release(self, sessions: Iterable[Hashable] | None = None) -> None:
        """Drop what `generate` keeps for ``sessions`` (``None``: for every session).

        Call it when a conversation ends, and with ``None`` after every change
        of the weights (cached work was computed with the old ones). A policy
        that caches nothing does nothing.
        """
        ...

    def logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        temperature: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """Differentiable log-probs of every next token.

        Args:
            input_ids: ``(B, T)`` token ids, left-padded.
            attention_mask: ``(B, T)`` with 1 on real tokens and 0 on padding.
            temperature: The temperature the logits are divided by: one number, or
                ``(B,)`` one per row (each row's sampling temperature).

        Returns:
            ``(B, T - 1)`` float tensor whose ``[b, t]`` entry is
            ``log p(input_ids[b, t + 1] | input_ids[b, : t + 1])``, and 0 where
            ``input_ids[b, t + 1]`` is padding.
        """
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text, without special tokens added."""
        ...

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of token ids."""
        ...

    def encode_chat(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of a conversation rendered with the chat template."""
        ...

    def encode_message(self, message: Message, *, add_generation_prompt: bool = True) -> list[int]:
        """Token ids to append after an assistant turn that ended on a stop token.

        ``prompt + completion + encode_message(m)`` continues a conversation with
        message ``m`` (then the assistant's generation prompt), without
        re-encoding the earlier turns.
        """
        ...

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """Trainable parameters (for an optimiser)."""
        ...

    def save(self, path: str | Path) -> None:
        """Write weights (safetensors), config and tokenizer to directory ``path``."""
        ...

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a policy written by `save`."""
        ...
