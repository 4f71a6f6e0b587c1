"""Log-probs of given tokens without the whole ``(B, T, V)`` logits tensor.

The loss needs ``log p(token)`` of one token per position, but a causal LM's forward
returns the logits of every word of the vocabulary at every position: ``B x T x V``
float32 values (SmolLM2-135M: ``V = 49,152``, 192 KiB a position), and ``logsumexp``
and its backward hold two or three more tensors of that size. For SmolLM2 those are
most of the memory of a loss pass above its activations
(``benchmarks/lora_memory.py``).

`decoder_states` runs the model without its output layer when its logits are exactly
``lm_head(decoder(...).last_hidden_state)`` (`split_head`). `token_logprobs` then
applies the output layer to at most ``chunk_bytes`` of logits at a time, reducing each
chunk to the chosen tokens' log-probs at once; under autograd every chunk is
checkpointed (``torch.utils.checkpoint``): its logits are recomputed in the backward
pass and freed, so one chunk's logits live at a time, at the cost of one more
output-layer matmul. The values and gradients are those of the full logits, to float
rounding (``tests/test_policies.py``). Other models run their own forward and their
logits go through the same per-chunk reduction.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

HEAD_CHUNK_BYTES = 16 * 2**20
"""Float32 logits computed at once by `token_logprobs` (SmolLM2: 85 positions)."""

PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3"})
"""``model_type`` values whose logits are ``lm_head(last_hidden_state)``, unscaled."""


def split_head(model: Any) -> tuple[Any, torch.nn.Linear] | None:
    """``(decoder, output layer)`` of a model whose logits are the layer of its states.

    Args:
        model: A transformers ``*ForCausalLM``.

    Returns:
        ``(model.model, model.lm_head)`` for the architectures of `PLAIN_HEAD_MODELS`
        with a plain ``nn.Linear`` output layer (not one wrapped by an adapter), else
        None (softcapped or scaled logits, unknown architectures).
    """
    if getattr(model.config, "model_type", None) not in PLAIN_HEAD_MODELS:
        return None
    decoder, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    if decoder is None or type(head) is not torch.nn.Linear:
        return None
    return decoder, head


def decoder_states(model: Any, **inputs: Any) -> tuple[torch.Tensor, torch.nn.Linear | None, Any]:
    """The model's forward on ``inputs``, stopped before the output layer when it can be.

    Returns:
        ``(states, head, outputs)``: the ``(B, T, H)`` last hidden states and the output
        layer when `split_head` finds it, else the ``(B, T, V)`` logits and None; and
        the forward's output (its key/value cache, when ``use_cache=True``).
    """
    split = split_head(model)
    if split is None:
        out = model(**inputs)
        return out.logits, None, out
    decoder, head = split
    out = decoder(**inputs)
    return out.last_hidden_state, head, out


def token_logprobs(
    states: torch.Tensor,
    head: torch.nn.Linear | None,
    targets: torch.Tensor,
    *,
    temperature: torch.Tensor | None = None,
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """``log_softmax(head(states) / T)`` at ``targets``, a chunk of positions at a time.

    Args:
        states: ``(..., H)`` hidden states, or ``(..., V)`` logits when ``head`` is None.
        head: The output layer (``V`` rows), or None.
        targets: ``(...)`` token ids in ``[0, V)``, one per position of ``states``.
        temperature: ``(...)`` the temperature ``T > 0`` of each position's
            distribution (a sampling temperature); None: 1 everywhere.
        chunk_bytes: Float32 logits computed at once (at least one position's);
            None: `HEAD_CHUNK_BYTES`.

    Returns:
        ``(...)`` float32 log-probs, differentiable in ``states`` and the layer's weights.
    """
    if states.shape[:-1] != targets.shape:
        raise ValueError(
            f"expected one target per position: states {tuple(states.shape)} need targets "
            f"{tuple(states.shape[:-1])}, got {tuple(targets.shape)}"
        )
    if temperature is not None and temperature.shape != targets.shape:
        raise ValueError(
            f"expected one temperature per position: {tuple(targets.shape)}, "
            f"got {tuple(temperature.shape)}"
        )
    vocab = states.shape[-1] if head is None else head.out_features
    flat = states.reshape(-1, states.shape[-1])  # (N, H) or (N, V)
    flat_targets = targets.reshape(-1, 1).to(flat.device)  # (N, 1)
    flat_temps = None if temperature is None else temperature.reshape(-1, 1).to(flat.device)
    step = max(1, (chunk_bytes or HEAD_CHUNK_BYTES) // (4 * vocab))  # positions per chunk
    differentiable = torch.is_grad_enabled() and (
        flat.requires_grad or (head is not None and head.weight.requires_grad)
    )
    pieces = []
    for start in range(0, flat.shape[0], step):
        window = slice(start, start + step)
        temps = None if flat_temps is None else flat_temps[window]
        args = (flat[window], flat_targets[window], head, temps)
        if differentiable:  # the chunk's logits are recomputed in the backward pass
            pieces.append(checkpoint(_chunk_logprobs, *args, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(*args))
    if not pieces:
        return flat.new_zeros(targets.shape, dtype=torch.float32)
    return torch.cat(pieces).reshape(targets.shape)


def row_temperatures(
    temperature: float | torch.Tensor, rows: int, device: torch.device | str
) -> torch.Tensor:
    """``(rows,)`` float32 temperatures from one number or a ``(rows,)`` tensor, all > 0.

    Raises:
        ValueError: On a shape other than ``(rows,)`` or a temperature that is not > 0.
    """
    t = torch.as_tensor(temperature, dtype=torch.float32, device=device)
    if t.ndim == 0:
        t = t.expand(rows)
    if t.shape != (rows,):
        raise ValueError(
            f"temperature must be a number or one per row ({rows},), got {tuple(t.shape)}"
        )
    if not bool(torch.all(torch.isfinite(t) & (t > 0))):
        raise ValueError(f"temperatures must be finite and > 0, got {t.tolist()}")
    return t


def _chunk_logprobs(
    states: torch.Tensor,
    targets: torch.Tensor,
    head: torch.nn.Linear | None,
    temperature: torch.Tensor | None,
) -> torch.Tensor:
    """``(n,)`` log-probs of ``(n, 1)`` targets under ``(n, H)`` states (or logits).

    ``temperature`` is ``(n, 1)`` (each position's divisor of the logits) or None (1).
    """
    logits = states if head is None else F.linear(states, head.weight, head.bias)
    logits = logits.float()  # (n, V)
    if temperature is not None:
        logits = logits / temperature
    chosen = logits.gather(-1, targets).squeeze(-1)  # (n,)
    return chosen - torch.logsumexp(logits, dim=-1)
