"""Warm start: supervised fine-tuning on the scripted expert's demonstrations.

The rollout engine plays episodes with the env's scripted expert acting for every
role, and each role's policy is then trained on its own tokens of those episodes,
so RL starts from a policy that sometimes succeeds. A tiny model trained from
scratch first gets synthetic copying (and, optionally, lookup) steps: the circuits
a pretrained LM would bring.

One module per part, every public name importable from here:

- :mod:`~mgrpo_algos.sft.config`: `SFTConfig`, `RECIPE`, `PRETRAINED_RECIPE`,
  `LoRASettings`;
- :mod:`~mgrpo_algos.sft.demonstrations`: the expert's episodes
  (`collect_demonstrations`, `GiveUpExpert`);
- :mod:`~mgrpo_algos.sft.synthetic`: copying and lookup batches and `train_copy`;
- :mod:`~mgrpo_algos.sft.loop`: `train_sft`, `warm_start` and the policies it
  builds and saves.
"""

from __future__ import annotations

from mgrpo_algos.sft.config import PRETRAINED_RECIPE, RECIPE, LoRASettings, SFTConfig, recipe
from mgrpo_algos.sft.demonstrations import GIVE_UP, GiveUpExpert, collect_demonstrations
from mgrpo_algos.sft.loop import (
    lora_views,
    save_warm_start,
    sft_loss,
    tiny_policies,
    train_sft,
    train_warm_start,
    warm_start,
    warm_start_policies,
)
from mgrpo_algos.sft.synthetic import (
    LOOKUP_VALUE_LENGTHS,
    copy_batch,
    interleave,
    lookup_batch,
    synthetic_copy,
    train_copy,
)

__all__ = [
    "GIVE_UP",
    "LOOKUP_VALUE_LENGTHS",
    "PRETRAINED_RECIPE",
    "RECIPE",
    "GiveUpExpert",
    "LoRASettings",
    "SFTConfig",
    "collect_demonstrations",
    "copy_batch",
    "interleave",
    "lookup_batch",
    "lora_views",
    "recipe",
    "save_warm_start",
    "sft_loss",
    "synthetic_copy",
    "tiny_policies",
    "train_copy",
    "train_sft",
    "train_warm_start",
    "warm_start",
    "warm_start_policies",
]
