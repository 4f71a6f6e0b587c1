"""Batched KV-cache decoding: two incremental decoders and the sampling loop.

A decoder holds the key/value cache of one batch and offers ``prefill`` (the
left-padded prompts, once) and ``step`` (one new token per row). Two exist:

* `LlamaStaticDecoder`: for Llama-architecture models (the tiny models,
  SmolLM2, Llama 2/3). It runs the model's own weights through a short
  functional forward with a preallocated cache, so a step costs a fixed number of
  tensor operations: no mask rebuilding, no cache concatenation, no module
  dispatch. Its logits match the transformers forward to float rounding; the
  test suite checks this through `HFPolicy.logprobs`.
* `TransformersDecoder`: any causal LM, through its ``forward`` with a
  ``DynamicCache``.

`decode_loop` samples with either one and drops finished rows from the batch
once half of the live rows have stopped, so a few long completions do not keep
paying for the short ones.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from mgrpo_algos.policies.sampling import LeftPadded, sample_next


class Decoder(Protocol):
    """Incremental forward over a batch with a key/value cache."""

    def prefill(self, batch: LeftPadded) -> torch.Tensor:
        """Run the prompts; return last-position logits ``(B, V)`` in float32."""
        ...

    def step(self, token: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed ``(B,)`` tokens at ``(B, 1)`` positions; return logits ``(B, V)``."""
        ...

    def select(self, rows: torch.Tensor) -> None:
        """Keep only batch ``rows`` (a ``(B',)`` index tensor) from now on."""
        ...


class SamplingArgs(NamedTuple):
    """Temperature, nucleus mass and top-k of one `decode_loop` call."""

    temperature: float
    top_p: float
    top_k: int


class Decoded(NamedTuple):
    """`decode_loop` result, in the original row order.

    Attributes:
        tokens: ``(B, N)`` sampled ids (padding after a row's end).
        logprobs: ``(B, N)`` temperature-1 log-probs of ``tokens``.
        lengths: ``(B,)`` tokens per row, stop token included.
        stopped: ``(B,)`` whether each row ended on a stop token.
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor
    lengths: torch.Tensor
    stopped: torch.Tensor


def decode_loop(
    decoder: Decoder,
    batch: LeftPadded,
    *,
    max_new_tokens: int,
    sampling: SamplingArgs,
    stop_ids: tuple[int, ...],
    pad_id: int,
    generator: torch.Generator | None,
) -> Decoded:
    """Sample up to ``max_new_tokens`` per row, one batched step at a time.

    Args:
        decoder: A fresh decoder for ``batch``.
        batch: The left-padded prompts.
        max_new_tokens: Most tokens per row.
        sampling: Temperature, top-p and top-k (see `sample_next`).
        stop_ids: A row ends after sampling one of these; empty: never.
        pad_id: Written after a row's end.
        generator: Random generator of the sampling draws.

    Returns:
        Tokens, log-probs, lengths and stop flags of every row.
    """
    size, device = batch.ids.shape[0], batch.ids.device
    tokens = torch.full((size, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros(size, max_new_tokens, dtype=torch.float32, device=device)
    lengths = torch.full((size,), max_new_tokens, dtype=torch.long, device=device)
    stopped = torch.zeros(size, dtype=torch.bool, device=device)
    stop_tensor = torch.tensor(stop_ids, dtype=torch.long, device=device)
    live = torch.arange(size, device=device)  # original row of each decoder row
    alive = torch.ones(size, dtype=torch.bool, device=device)  # per decoder row
    positions = batch.positions[:, -1:] + 1  # (B, 1)
    logits = decoder.prefill(batch)  # (B, V)
    for step in range(max_new_tokens):
        token, logp = sample_next(logits, *sampling, generator=generator)  # (B',), (B',)
        tokens[live, step] = token
        logps[live, step] = logp
        remaining = len(live)
        if stop_ids:
            hit = torch.isin(token, stop_tensor) & alive  # (B',)
            lengths[live[hit]] = step + 1
            stopped[live[hit]] = True
            alive &= ~hit
            remaining = int(alive.sum())  # the one host sync per step
        if remaining == 0 or step + 1 == max_new_tokens:
            break
        if remaining <= len(live) // 2:
            keep = alive.nonzero().squeeze(-1)
            live, alive = live[keep], alive[keep]
            token, positions = token[keep], positions[keep]
            decoder.select(keep)
        logits = decoder.step(token, positions)
        positions = positions + 1
    # Rows that stopped but were not yet dropped kept sampling: blank their tail.
    beyond = torch.arange(max_new_tokens, device=device)[None, :] >= lengths[:, None]  # (B, N)
    tokens, logps = tokens.masked_fill(beyond, pad_id), logps.masked_fill(beyond, 0.0)
    return Decoded(tokens, logps, lengths, stopped)


class TransformersDecoder:
    """Decoder for any transformers causal LM: its ``forward`` with a ``DynamicCache``.

    Args:
        model: A ``*ForCausalLM`` model in eval mode.
        max_new_tokens: Most steps after the prefill (sizes the attention mask).
    """

    def __init__(self, model: Any, max_new_tokens: int) -> None:
        self.model = model
        self.max_new_tokens = max_new_tokens
        forward = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward else "past_key_values"
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        try:
            self.cache = DynamicCache(config=model.config)
        except TypeError:  # transformers < 4.56 takes no config
            self.cache = DynamicCache()
        self.mask = torch.empty(0)
        self.length = 0

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            attention_mask=self.mask[:, : self.length],
            position_ids=positions,
            use_cache=True,
            **{self._cache_kwarg: self.cache},
            **self._keep_last,
        )
        return out.logits[:, -1].float()

    def prefill(self, batch: LeftPadded) -> torch.Tensor:
        size, width = batch.ids.shape
        self.mask = torch.ones(
            size, width + self.max_new_tokens, dtype=torch.long, device=batch.ids.device
        )
        self.mask[:, :width] = batch.mask
        self.length = width
        return self._forward(batch.ids, batch.positions)

    def step(self, token: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.length += 1
        return self._forward(token[:, None], positions)

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.mask = self.mask[rows]


class LlamaStaticDecoder:
    """Functional Llama forward over the model's own weights with a static KV cache.

    Works for ``LlamaForCausalLM`` with plain ``nn.Linear`` projections (any
    head count, grouped-query attention, optional biases, any RoPE scaling the
    model's rotary module implements). Use `LlamaStaticDecoder.supports` first.

    Args:
        model: The ``LlamaForCausalLM`` (eval mode; called under inference mode).
        max_new_tokens: Most steps after the prefill (sizes the cache).
    """

    def __init__(self, model: Any, max_new_tokens: int) -> None:
        config = model.config
        self.model = model
        self.layers = list(model.model.layers)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = float(config.rms_norm_eps)
        self.max_new_tokens = max_new_tokens
        self.scale = float(getattr(self.layers[0].self_attn, "scaling", self.head_dim**-0.5))
        # One (q, k, v) projection per layer: one matmul instead of three, and one
        # rotary pass over q and k together. Rebuilt per decoder, so it always
        # reflects the current weights.
        self.qkv = [_fused_qkv(layer.self_attn) for layer in self.layers]
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.key_mask = torch.empty(0, dtype=torch.bool)
        self.length = 0

    @staticmethod
    def supports(model: Any) -> bool:
        """Whether ``model`` has the exact Llama structure this decoder computes."""
        if getattr(model.config, "model_type", None) != "llama":
            return False
        inner = getattr(model, "model", None)
        layers = getattr(inner, "layers", None)
        if layers is None or not hasattr(inner, "rotary_emb"):
            return False
        linear = torch.nn.Linear
        for layer in layers:
            attn, mlp = layer.self_attn, layer.mlp
            projections = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)
            projections += (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
            if any(type(p) is not linear for p in projections):
                return False
        return type(model.lm_head) is linear

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # Same arithmetic as LlamaRMSNorm: normalise in float32, cast, then scale.
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return weight * (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)

    def _attention(
        self, index: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Self-attention of layer ``index`` for ``x`` (B, T, H); writes the cache."""
        size, length, _ = x.shape
        heads, kv_heads = self.num_heads, self.num_kv_heads
        qkv = F.linear(x, *self.qkv[index]).view(size, length, heads + 2 * kv_heads, -1)
        qk = _rotate(qkv[:, :, : heads + kv_heads], cos, sin)  # (B, T, heads + kv, head_dim)
        q = qk[:, :, :heads].transpose(1, 2)  # (B, heads, T, head_dim)
        k = qk[:, :, heads:].transpose(1, 2)  # (B, kv_heads, T, head_dim)
        v = qkv[:, :, heads + kv_heads :].transpose(1, 2)
        start = self.length - length
        self.keys[index][:, :, start : self.length] = k
        self.values[index][:, :, start : self.length] = v
        out = F.scaled_dot_product_attention(
            q,
            self.keys[index][:, :, : self.length],
            self.values[index][:, :, : self.length],
            attn_mask=mask,
            scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )  # (B, heads, T, head_dim)
        return _linear(
            out.transpose(1, 2).reshape(size, length, -1), self.layers[index].self_attn.o_proj
        )

    def _forward(
        self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.model.model.embed_tokens(ids)  # (B, T, H)
        cos, sin = self.model.model.rotary_emb(hidden, positions)  # (B, T, head_dim)
        cos, sin = cos[:, :, None], sin[:, :, None]  # (B, T, 1, head_dim)
        for index, layer in enumerate(self.layers):
            normed = self._norm(hidden, layer.input_layernorm.weight)
            hidden = hidden + self._attention(index, normed, cos, sin, mask)
            normed = self._norm(hidden, layer.post_attention_layernorm.weight)
            mlp = layer.mlp
            gated = mlp.act_fn(_linear(normed, mlp.gate_proj)) * _linear(normed, mlp.up_proj)
            hidden = hidden + _linear(gated, mlp.down_proj)
        last = self._norm(hidden[:, -1], self.model.model.norm.weight)  # (B, H)
        return _linear(last, self.model.lm_head).float()

    def prefill(self, batch: LeftPadded) -> torch.Tensor:
        size, width = batch.ids.shape
        device = batch.ids.device
        param = next(self.model.parameters())
        shape = (size, self.num_kv_heads, width + self.max_new_tokens, self.head_dim)
        self.keys = [torch.empty(shape, dtype=param.dtype, device=device) for _ in self.layers]
        self.values = [torch.empty(shape, dtype=param.dtype, device=device) for _ in self.layers]
        self.key_mask = torch.ones(shape[0], shape[2], dtype=torch.bool, device=device)
        self.key_mask[:, :width] = batch.mask.bool()
        self.length = width
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        # A padding query sees itself only, so no softmax row is empty (no NaN);
        # real queries never see padding keys.
        mask = causal & self.key_mask[:, None, None, :width]  # (B, 1, P, P)
        mask = mask | torch.eye(width, dtype=torch.bool, device=device)
        return self._forward(batch.ids, batch.positions, mask)

    def step(self, token: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.length += 1
        mask = self.key_mask[:, None, None, : self.length]  # (B, 1, 1, L)
        return self._forward(token[:, None], positions, mask)

    def select(self, rows: torch.Tensor) -> None:
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]
        self.key_mask = self.key_mask[rows]


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    """``layer(x)`` without the module-call overhead."""
    return F.linear(x, layer.weight, layer.bias)


def _fused_qkv(attn: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of the q, k and v projections stacked along the output axis."""
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    weight = torch.cat([p.weight for p in projections])
    if all(p.bias is None for p in projections):
        return weight, None
    biases = [
        p.bias if p.bias is not None else p.weight.new_zeros(p.out_features) for p in projections
    ]
    return weight, torch.cat(biases)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half convention) of ``x`` (B, T, heads, head_dim)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def make_decoder(model: Any, max_new_tokens: int, *, fast: bool = True) -> Decoder:
    """The static-cache Llama decoder when it applies (and ``fast``), else the generic one."""
    if fast and LlamaStaticDecoder.supports(model):
        return LlamaStaticDecoder(model, max_new_tokens)
    return TransformersDecoder(model, max_new_tokens)
