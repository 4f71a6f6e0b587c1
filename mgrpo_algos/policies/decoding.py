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

`PrefixCache` keeps the keys and values a `LlamaStaticDecoder` computed for
some rows (`LlamaStaticDecoder.export`), per session key, and hands them back
as the ``past`` of a later decoder whose prompts start with the same tokens:
then only the rest of each prompt goes through the model.
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
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
        past: Per prompt of the batch, the ``(layers, 2, kv_heads, n, head_dim)``
            keys and values of ``n`` tokens that precede it (`export` of an
            earlier decoder, see `PrefixCache`), or ``None``. The prompts'
            positions must then start at ``n``.
        keep: Keep the cache of rows dropped by `select`, so that `export` can
            return every row's keys and values at the end.
    """

    def __init__(
        self,
        model: Any,
        max_new_tokens: int,
        *,
        past: Sequence[torch.Tensor | None] | None = None,
        keep: bool = False,
    ) -> None:
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
        self.past = past
        self.keep = keep
        # Every layer's keys and values in one tensor, so that selecting rows,
        # loading cached prefixes and exporting sequences is one op per row or batch.
        self.kv = torch.empty(0)  # (layers, 2, B, kv_heads, W, head_dim)
        self.keys: list[torch.Tensor] = []  # views kv[i, 0]: (B, kv_heads, W, head_dim)
        self.values: list[torch.Tensor] = []
        self.key_mask = torch.empty(0, dtype=torch.bool)  # (B, W)
        self.prompt_valid = torch.empty(0, dtype=torch.bool)  # (B, P), original row order
        self.rows = torch.empty(0, dtype=torch.long)  # original row of each cache row
        self.retired: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
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
        """Run the prompts (after the cached prefixes given as ``past``, if any).

        The cache of row ``b`` is laid out as ``[padding][past b][padding][prompt b]``
        followed by the generated tokens: the cached prefixes are right-aligned in
        the first ``C`` slots (``C`` the longest one) and the prompts left-padded
        after them, so one forward over the ``(B, P)`` prompts fills the cache.
        ``batch.positions`` must already count the cached tokens.
        """
        size, width = batch.ids.shape
        device = batch.ids.device
        past = list(self.past) if self.past is not None else [None] * size
        if len(past) != size:
            raise ValueError(f"expected one past entry per prompt ({size}); got {len(past)}")
        cached = torch.tensor([0 if p is None else p.shape[3] for p in past], device=device)
        start = int(cached.max())
        total = start + width
        param = next(self.model.parameters())
        shape = (len(self.layers), 2, size, self.num_kv_heads, total + self.max_new_tokens)
        self.kv = torch.empty(*shape, self.head_dim, dtype=param.dtype, device=device)
        for row, entry in enumerate(past):
            count = 0 if entry is None else entry.shape[3]
            if count:
                self.kv[:, :, row, :, start - count : start] = entry
            if count < start:
                # Masked slots must still hold finite numbers: attention multiplies
                # their zero weights with the values, and 0 * NaN is NaN.
                self.kv[:, :, row, :, : start - count].zero_()
        self._bind()
        self.key_mask = torch.ones(size, shape[-1], dtype=torch.bool, device=device)
        self.key_mask[:, :start] = torch.arange(start, device=device) >= start - cached[:, None]
        self.key_mask[:, start:total] = batch.mask.bool()
        self.prompt_valid = self.key_mask[:, :total].clone()
        self.rows = torch.arange(size, device=device)
        self.retired = []
        self.length = total
        causal = torch.ones(width, total, dtype=torch.bool, device=device).tril(diagonal=start)
        # A padding query sees itself only, so no softmax row is empty (no NaN);
        # real queries never see padding keys.
        mask = causal & self.key_mask[:, None, None, :total]  # (B, 1, P, C + P)
        mask[..., start:] |= torch.eye(width, dtype=torch.bool, device=device)
        return self._forward(batch.ids, batch.positions, mask)

    def step(self, token: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.length += 1
        mask = self.key_mask[:, None, None, : self.length]  # (B, 1, 1, L)
        return self._forward(token[:, None], positions, mask)

    def select(self, rows: torch.Tensor) -> None:
        if self.keep:  # keep the dropped rows' cache (a reference, no copy) for `export`
            dropped = torch.ones(len(self.rows), dtype=torch.bool, device=rows.device)
            dropped[rows] = False
            local = dropped.nonzero().squeeze(-1)
            self.retired.append((self.rows[local], self.kv, local))
        self.kv = self.kv.index_select(2, rows)
        self.rows = self.rows[rows]
        self.key_mask = self.key_mask[rows]
        self._bind()

    def export(self, rows: Sequence[int], lengths: torch.Tensor) -> list[torch.Tensor]:
        """Keys and values of each row's cached prefix, prompt and completion but its last token.

        The last sampled token of a row never went through the model, so its
        keys and values do not exist; tokens a finished row kept sampling
        before it left the batch are left out too. Needs ``keep=True``.

        Args:
            rows: Rows of the original batch to export.
            lengths: ``(B,)`` completion lengths (`Decoded.lengths`), original order.

        Returns:
            One ``(layers, 2, kv_heads, n, head_dim)`` tensor per row of ``rows``,
            ``n`` = cached + prompt + completion length - 1.
        """
        if not self.keep:
            raise ValueError("export needs a decoder built with keep=True; got keep=False")
        where: dict[int, tuple[torch.Tensor, int]] = {}
        local_rows = torch.arange(len(self.rows), device=self.rows.device)
        for original, kv, local in [*self.retired, (self.rows, self.kv, local_rows)]:
            for row, at in zip(original.tolist(), local.tolist(), strict=True):
                where[row] = (kv, at)
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.prompt_valid.device)
        prompt = self.prompt_valid[index]  # (R, P)
        fed = lengths.to(index.device)[index] - 1  # (R,) completion tokens that went through
        free = self.kv.shape[4] - prompt.shape[1]
        generated = torch.arange(free, device=index.device) < fed[:, None]  # (R, W - P)
        valid = torch.cat([prompt, generated], dim=1)  # (R, W)
        slots = valid.nonzero()[:, 1].split(valid.sum(1).tolist())
        out = []
        for row, row_slots in zip(rows, slots, strict=True):
            kv, at = where[row]
            out.append(kv[:, :, at].index_select(3, row_slots))
        return out

    def _bind(self) -> None:
        self.keys = [self.kv[index, 0] for index in range(len(self.layers))]
        self.values = [self.kv[index, 1] for index in range(len(self.layers))]


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


class CacheEntry(NamedTuple):
    """The keys and values one session left behind, with the tokens they cover.

    Attributes:
        ids: ``(n,)`` int64 token ids the cache covers.
        kv: ``(layers, 2, kv_heads, n, head_dim)`` keys (``[:, 0]``) and values.
    """

    ids: np.ndarray
    kv: torch.Tensor


class PrefixCache:
    """Key/value caches of earlier `LlamaStaticDecoder` runs, one per session key.

    A row whose prompt starts with tokens a session's entry covers reuses those
    tokens' keys and values instead of running them through the model again.
    Reuse is decided on token ids alone (the longest common prefix), so a wrong
    or stale key costs speed, never correctness. Entries are tied to the weights
    they were computed with: `check_weights` drops them all once the weights'
    guard changes.
    """

    def __init__(self) -> None:
        self.entries: dict[Hashable, CacheEntry] = {}
        self.guard: object = None

    @property
    def tokens(self) -> int:
        """Total tokens held over all entries."""
        return sum(len(entry.ids) for entry in self.entries.values())

    def check_weights(self, guard: object) -> None:
        """Drop every entry if ``guard`` (a fingerprint of the weights) changed."""
        if guard != self.guard:
            self.entries.clear()
            self.guard = guard

    def lookup(
        self, prompts: Sequence[Sequence[int]], sessions: Sequence[Hashable | None]
    ) -> tuple[list[torch.Tensor | None], list[int]]:
        """The reusable cache of each prompt and how many of its tokens it covers.

        At most ``len(prompt) - 1`` tokens are reused, so at least one token is
        run and gives the next-token logits.

        Returns:
            Per prompt: a ``(layers, 2, kv_heads, n, head_dim)`` view of the
            cached keys and values of its first ``n`` tokens (``None`` when
            ``n == 0``), and ``n``.
        """
        past: list[torch.Tensor | None] = []
        reused: list[int] = []
        for prompt, key in zip(prompts, sessions, strict=True):
            entry = None if key is None else self.entries.get(key)
            count = 0 if entry is None else _common_prefix(entry.ids, prompt, len(prompt) - 1)
            past.append(entry.kv[:, :, :, :count] if entry is not None and count else None)
            reused.append(count)
        return past, reused

    def store(self, key: Hashable, ids: Sequence[int], kv: torch.Tensor) -> None:
        """Replace the entry of ``key`` with ``kv`` covering ``ids``."""
        assert kv.shape[3] == len(ids), (kv.shape, len(ids))
        self.entries[key] = CacheEntry(np.asarray(ids, dtype=np.int64), kv)

    def release(self, sessions: Iterable[Hashable] | None = None) -> None:
        """Drop the entries of ``sessions`` (unknown keys are ignored), or all with ``None``."""
        if sessions is None:
            self.entries.clear()
            return
        for key in sessions:
            self.entries.pop(key, None)


def _common_prefix(cached: np.ndarray, prompt: Sequence[int], limit: int) -> int:
    """Length of the longest common prefix of ``cached`` and ``prompt``, at most ``limit``."""
    count = min(len(cached), limit)
    if count <= 0:
        return 0
    differ = np.flatnonzero(cached[:count] != np.asarray(prompt[:count], dtype=np.int64))
    return int(differ[0]) if len(differ) else count


def make_decoder(model: Any, max_new_tokens: int, *, fast: bool = True) -> Decoder:
    """The static-cache Llama decoder when it applies (and ``fast``), else the generic one."""
    if fast and LlamaStaticDecoder.supports(model):
        return LlamaStaticDecoder(model, max_new_tokens)
    return TransformersDecoder(model, max_new_tokens)
