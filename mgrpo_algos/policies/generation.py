"""`HFPolicy.generate`'s plumbing: session keys, the prefix-cached decode, the collected output.

`decode_prompts` runs `decode_loop` over a batch of prompts. Rows with a session
key go through the `PrefixCache`: each resumes from the keys and values its key
left for the longest common prefix of the cached tokens and its prompt, and
leaves its own in their place. Without keys, or on a model the fast decoder does
not support, the whole prompts are decoded and nothing is cached.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from functools import partial
from typing import Any

import torch

from mgrpo_algos.policies.base import GenerationOutput
from mgrpo_algos.policies.decoding import (
    Decoded,
    LlamaStaticDecoder,
    PrefixCache,
    SamplingArgs,
    decode_loop,
    make_decoder,
)
from mgrpo_algos.policies.sampling import left_pad


def decode_prompts(
    model: Any,
    prompts: Sequence[Sequence[int]],
    sessions: Sequence[Hashable | None] | None,
    cache: PrefixCache,
    *,
    fast: bool,
    pad_id: int,
    max_new_tokens: int,
    sampling: SamplingArgs,
    stop_ids: tuple[int, ...],
    generator: torch.Generator | None,
) -> Decoded:
    """Run `decode_loop`, through the prefix ``cache`` for the rows with a session key.

    Args:
        model: The causal LM, on the device every tensor is made on.
        prompts: Token ids of each prompt.
        sessions: One key (or ``None``) per prompt, checked by `check_sessions`.
        cache: The policy's prefix cache; dropped whole when the weights changed.
        fast: Use `LlamaStaticDecoder` where the model supports it.
        pad_id: Padding token of the left-padded batch.
        max_new_tokens: Most tokens sampled per prompt.
        sampling: Temperature, top-p and top-k.
        stop_ids: Tokens that end a completion.
        generator: Random generator on the model's device (`on_device`).
    """
    device = next(model.parameters()).device
    loop = partial(
        decode_loop,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        stop_ids=stop_ids,
        pad_id=pad_id,
        generator=generator,
    )
    keyed = [row for row, key in enumerate(sessions or ()) if key is not None]
    if not keyed or not (fast and LlamaStaticDecoder.supports(model)):
        batch = left_pad(prompts, pad_id=pad_id, device=device)
        decoder = make_decoder(model, max_new_tokens, fast=fast)
        return loop(decoder, batch)
    assert sessions is not None
    cache.check_weights(_weights_guard(model))
    past, reused = cache.lookup(prompts, sessions)
    suffixes = [prompt[count:] for prompt, count in zip(prompts, reused, strict=True)]
    batch = left_pad(suffixes, pad_id=pad_id, device=device)
    offsets = torch.tensor(reused, dtype=torch.long, device=device)
    batch = batch._replace(positions=batch.positions + offsets[:, None])
    decoder = LlamaStaticDecoder(model, max_new_tokens, past=past, keep=True)
    decoded = loop(decoder, batch)
    kept = decoder.export(keyed, decoded.lengths)
    completions = decoded.tokens[keyed].tolist()
    lengths = decoded.lengths[keyed].tolist()
    for row, kv, tokens, length in zip(keyed, kept, completions, lengths, strict=True):
        cache.store(sessions[row], [*prompts[row], *tokens[: length - 1]], kv)
    return decoded


def collect(decoded: Decoded, tokenizer: Any) -> GenerationOutput:
    """Cut each row at its length and decode, with one device-to-host copy per tensor."""
    lengths = decoded.lengths.tolist()
    ids = [row[:n] for row, n in zip(decoded.tokens.tolist(), lengths, strict=True)]
    return GenerationOutput(
        completion_ids=ids,
        logprobs=[row[:n] for row, n in zip(decoded.logprobs.tolist(), lengths, strict=True)],
        texts=tokenizer.batch_decode(ids, skip_special_tokens=True),
        finished=[bool(flag) for flag in decoded.stopped.tolist()],
    )


def on_device(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """``generator`` if it lives on ``device``, else a generator there seeded from it.

    One seed is drawn from a generator on another device (a CPU generator for a
    GPU model), so the same seed still gives the same completions, and every
    sampling draw is made on the model's device without a copy per token.
    """
    if generator is None or generator.device.type == device.type:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device).manual_seed(seed)


def check_sessions(sessions: Sequence[Hashable | None] | None, size: int) -> None:
    """Raise `ValueError` unless ``sessions`` is None or ``size`` distinct keys (or Nones)."""
    if sessions is None:
        return
    if len(sessions) != size:
        raise ValueError(f"expected one session key per prompt ({size}); got {len(sessions)} keys")
    counts = Counter(key for key in sessions if key is not None)
    if any(count > 1 for count in counts.values()):
        repeated = sorted(repr(key) for key, count in counts.items() if count > 1)
        raise ValueError(
            f"expected distinct session keys within one call; got {', '.join(repeated)} "
            "more than once"
        )


def _weights_guard(model: Any) -> tuple[int, ...]:
    """Storage address and version counter of every parameter.

    In-place updates through autograd-visible ops (non-fused optimiser steps,
    ``load_state_dict``) bump a version counter and replacing a tensor changes
    its address; fused optimiser kernels and ``param.data`` writes do neither,
    which is why callers must still `HFPolicy.release` after training.
    """
    return tuple(
        value for param in model.parameters() for value in (param.data_ptr(), param._version)
    )
