"""The warm start's settings: `SFTConfig`, its two recipes, and a LoRA warm start's adapters.

``mgrpo`` reads these classes and constants from this source without importing
torch (`mgrpo_algos.config_reader`), so they stay plain dataclasses and calls of them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from mgrpo_algos.lora import LORA_TARGETS, check_lora_config


@dataclass
class SFTConfig:
    """Settings of the warm start.

    Attributes:
        episodes: Expert episodes to record (one demonstration set, reused each epoch).
        epochs: Passes over the demonstrations.
        lr: AdamW learning rate (cosine decay to 10% over the run).
        weight_decay: AdamW weight decay.
        max_batch_tokens: Padded tokens per optimiser step.
        grad_clip: Max gradient norm.
        seed: Seeds the demonstration episodes and the shuffling.
        context_weight: Weight of the next-token loss on context tokens (0: the
            agent's own tokens only).
        copy_steps: Steps of synthetic copying before the demonstrations (0: none).
        copy_length: Tokens in each string to copy.
        copy_batch: Strings per copying step.
        lookup_steps: Steps of synthetic key -> digit-string lookup, interleaved with
            the copying steps (0: none).
        lookup_records: Records in each lookup row.
        rehearsal: Weight of a synthetic copying batch's loss added to every
            demonstration step (0: none), so that SFT keeps the copying circuit
            the synthetic steps built instead of overwriting it.
        rehearsal_batch: Strings in each rehearsal batch.
        copy_digits: Share of the copying (and rehearsal) strings made of digits only,
            where each digit recurs many times, so that copying must track position
            rather than find the one earlier copy of the current token (0: none).
        sub_give_up: Share of the sub-agents' demonstrated calls that give up: the
            expert finds the fact as usual, then returns ``unknown`` instead of it
            (main re-delegates, as the expert does with any fact not returned).
            Noisier demonstrations: the "improvable sub-agent" regime (0: none).
    """

    episodes: int = 400
    epochs: int = 3
    lr: float = 3e-3
    weight_decay: float = 0.01
    max_batch_tokens: int = 16384
    grad_clip: float = 1.0
    seed: int = 0
    context_weight: float = 0.0
    copy_steps: int = 0
    copy_length: int = 48
    copy_batch: int = 32
    lookup_steps: int = 0
    lookup_records: int = 8
    rehearsal: float = 0.0
    rehearsal_batch: int = 8
    copy_digits: float = 0.0
    sub_give_up: float = 0.0

    def __post_init__(self) -> None:
        for name in ("copy_steps", "lookup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        names = ("episodes", "epochs", "max_batch_tokens", "copy_length", "copy_batch")
        for name in (*names, "lookup_records", "rehearsal_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (self.context_weight >= 0 and math.isfinite(self.context_weight)):
            raise ValueError(
                f"context_weight must be a finite number >= 0, got {self.context_weight!r}"
            )
        if not (self.rehearsal >= 0 and math.isfinite(self.rehearsal)):
            raise ValueError(f"rehearsal must be a finite number >= 0, got {self.rehearsal!r}")
        for name in ("copy_digits", "sub_give_up"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip!r}")


RECIPE = SFTConfig(
    episodes=1500,
    epochs=3,
    lr=1e-3,
    max_batch_tokens=2048,
    context_weight=1.0,
    copy_steps=400,
    lookup_steps=0,
)
"""The warm start of the demo, the benchmarks and ``mgrpo sft``: 400 steps of copying,
then 3 epochs of the expert's episodes in 2,048-token
batches at lr 1e-3, with the context's language-modelling loss (figures:
docs/results.md)."""


PRETRAINED_RECIPE = SFTConfig(
    episodes=64,
    epochs=2,
    lr=2e-3,
    max_batch_tokens=1024,
    context_weight=0.0,
    copy_steps=0,
    lookup_steps=0,
)
"""The warm start of a pretrained model (``mgrpo sft --model smollm2|DIR``), meant for
LoRA adapters: the expert's episodes alone, on the agent's own tokens (a pretrained
model needs no synthetic copying and no language-modelling term); figures in
docs/training.md, "SmolLM2 recipe"."""


@dataclass
class LoRASettings:
    """The adapters of a LoRA warm start (the ``lora_*`` fields of the learners' configs).

    Attributes:
        lora_rank: Rank of each adapter (> 0).
        lora_alpha: Scaling numerator (the update is ``alpha / rank * B A``).
        lora_dropout: Dropout on the adapters' input in the loss, in [0, 1).
        lora_target_modules: Names of the linear layers that get adapters.
    """

    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        check_lora_config(self)
        if self.lora_rank == 0:
            raise ValueError("a LoRA warm start needs lora_rank > 0, got 0 (no adapters)")

    @property
    def backend(self) -> str:
        """A warm start runs in one process."""
        return "embedded"


def recipe(**changes: Any) -> SFTConfig:
    """:data:`RECIPE` with ``changes`` (e.g. ``episodes=2000``)."""
    return dataclasses.replace(RECIPE, **changes)
