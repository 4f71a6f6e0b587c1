"""Tokenizer and model builders for the tiny offline policy (`HFPolicy.tiny`).

The tokenizer is word-level over an environment's vocabulary with a character
fallback, so that:

* every vocabulary word (that contains no digit) is exactly one token;
* every printable ASCII character, ``"\\n"`` and ``"\\t"`` is a token, and any text
  made of them round-trips losslessly through ``encode``/``decode``; the only
  exception is text that spells a special token such as ``<|end|>``, which is
  read as that token (as with any chat model);
* digits are single-character tokens, so numbers generalise; with
  ``numbers=True`` the vocabulary's words that contain digits (an env's document
  ids and years, say) become single tokens too, matched only where no other digit
  is glued to them (``1976`` in ``"in 1976."``, not in ``"19765"``), and every
  other number is still spelled digit by digit.

A vocabulary word is matched only where it is not glued to other letters: with
the word ``search`` in the vocabulary, ``"search_tool"`` gives ``search``, ``_``,
``t``, ``o``, ``o``, ``l`` (if ``tool`` is not a word), while ``"research"`` is
spelled character by character.

The chat template is prefix-stable: each message renders as
``<|role|>content<|end|>`` after a leading ``<|bos|>``, and the generation prompt
is ``<|assistant|>``, so the rendering of ``messages[:k]`` plus the generation
prompt is a prefix of the rendering of ``messages[:k + 1]`` when message ``k`` is
the assistant's reply. ``<|end|>`` is the end-of-turn (stop) token.

The model is a Llama-style decoder (``LlamaForCausalLM``) with tied input and
output embeddings; see `TINY_SIZES` for the three sizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD = "<|pad|>"
BOS = "<|bos|>"
UNK = "<|unk|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
TOOL = "<|tool|>"
END = "<|end|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, UNK, SYSTEM, USER, ASSISTANT, TOOL, END)
"""Special tokens, in id order (``<|pad|>`` is id 0)."""

CHAT_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
"""Roles the tiny chat template accepts."""

CHARACTERS: tuple[str, ...] = tuple(chr(c) for c in range(32, 127)) + ("\n", "\t")
"""Single-character tokens: printable ASCII, newline and tab."""

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('unknown chat role ' ~ message['role'] ~ "
    "'; expected one of system, user, assistant, tool') }}"
    "{% endif %}"
    "{{ '<|' ~ message['role'] ~ '|>' ~ message['content'] ~ '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# Letters delimit words; digits, underscores and punctuation do not, so
# "page17" gives "page", "1", "7" and "search_tool" gives "search", "_", ...
_LETTER = "A-Za-z"


SizeName = Literal["micro", "small", "base"]


@dataclass(frozen=True)
class TinySize:
    """Architecture of one tiny model size.

    Attributes:
        hidden_size: Width of the residual stream.
        num_layers: Number of decoder blocks.
        num_heads: Attention heads (key/value heads are the same number).
        intermediate_size: Width of the gated MLP.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int


TINY_SIZES: dict[str, TinySize] = {
    "micro": TinySize(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384),
    "small": TinySize(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=768),
    "base": TinySize(hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1024),
}
"""Sizes: micro ~0.8M, small ~3.4M, base ~10.6M parameters (plus ``hidden * vocab``)."""


def resolve_vocabulary(vocabulary: Any, *, numbers: bool = False) -> list[str]:
    """Turn an env or an iterable of words into a sorted, de-duplicated word list.

    Args:
        vocabulary: An iterable of strings, or an environment (possibly wrapped)
            whose ``.unwrapped.vocabulary()`` returns one.
        numbers: Keep the words that contain a digit.

    Returns:
        The distinct non-empty words that become single tokens: sorted, without
        words that contain a digit unless ``numbers`` (by default numbers are
        spelled digit by digit) and without single characters that are already
        tokens.

    Raises:
        TypeError: If ``vocabulary`` is a string, not iterable, or holds non-strings.
    """
    if hasattr(vocabulary, "unwrapped") and hasattr(vocabulary.unwrapped, "vocabulary"):
        vocabulary = vocabulary.unwrapped.vocabulary()
    if isinstance(vocabulary, str) or not isinstance(vocabulary, Iterable):
        raise TypeError(
            "vocabulary must be an iterable of words or an env with .unwrapped.vocabulary(); "
            f"got {type(vocabulary).__name__}"
        )
    words = set()
    for word in vocabulary:
        if not isinstance(word, str):
            raise TypeError(f"vocabulary words must be str; got {type(word).__name__}: {word!r}")
        if word and (numbers or not any(ch.isdigit() for ch in word)) and word not in CHARACTERS:
            words.add(word)
    return sorted(words - set(SPECIAL_TOKENS))


def _escape(text: str) -> str:
    """Escape ``text`` for a literal match in an Oniguruma regex (hex escapes)."""
    return "".join(ch if ch.isascii() and ch.isalnum() else f"\\x{{{ord(ch):X}}}" for ch in text)


def _word_pattern(word: str) -> str:
    """Regex for one vocabulary word that is not glued to neighbouring letters or digits."""

    def guard(ch: str) -> str:
        return f"[{_LETTER}]" if ch.isalpha() else "[0-9]" if ch.isdigit() else ""

    head, tail = guard(word[0]), guard(word[-1])
    head = f"(?<!{head})" if head else ""
    tail = f"(?!{tail})" if tail else ""
    return head + _escape(word) + tail


def _split_pattern(words: list[str]) -> str:
    """One regex that matches a vocabulary word (longest first) or else any character."""
    by_length = sorted(words, key=lambda w: (-len(w), w))
    return "|".join([_word_pattern(w) for w in by_length] + [r"[\s\S]"])


def build_tokenizer(vocabulary: Any, *, numbers: bool = False) -> PreTrainedTokenizerFast:
    """Build the word-level tokenizer with character fallback and the chat template.

    Args:
        vocabulary: Words (or an env exposing ``.unwrapped.vocabulary()``); see
            `resolve_vocabulary`.
        numbers: Make the vocabulary's words with digits single tokens too.

    Returns:
        A fast tokenizer with ``pad``, ``bos``, ``unk`` and ``eos`` (``<|end|>``)
        set, no automatic special tokens on plain ``encode``, and a prefix-stable
        chat template.
    """
    words = resolve_vocabulary(vocabulary, numbers=numbers)
    # Words carry no leading space: a space is its own token, so a word is the same
    # token wherever it stands ("film Burning" and "search[Burning"), and copying a
    # name from an observation into a tool call is an identity copy.
    tokens = list(SPECIAL_TOKENS) + list(CHARACTERS) + words
    vocab = {token: index for index, token in enumerate(tokens)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(
        Regex(_split_pattern(words)), behavior="isolated", invert=False
    )
    core.decoder = decoders.Fuse()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=END,
        unk_token=UNK,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT, TOOL],
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=1 << 30,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    size: SizeName = "small",
    seed: int = 0,
    max_positions: int = 2048,
) -> LlamaForCausalLM:
    """Build a freshly initialised Llama-style model for ``tokenizer``.

    Initialisation draws from a local ``torch.Generator`` seeded with ``seed``;
    the global RNG is left as it was, and the same seed gives the same weights.

    Args:
        tokenizer: The tokenizer from `build_tokenizer` (sets vocabulary size and ids).
        size: One of ``"micro"``, ``"small"``, ``"base"`` (see `TINY_SIZES`).
        seed: Initialisation seed.
        max_positions: ``max_position_embeddings`` of the config.

    Returns:
        The model in float32 on CPU, in eval mode.

    Raises:
        ValueError: If ``size`` is unknown or ``max_positions`` is not positive.
    """
    if size not in TINY_SIZES:
        raise ValueError(f"size must be one of {sorted(TINY_SIZES)}; got {size!r}")
    if max_positions < 1:
        raise ValueError(f"max_positions must be >= 1; got {max_positions}")
    arch = TINY_SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(config)
    _init_weights(model, seed=seed, std=config.initializer_range)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval()


@torch.no_grad()
def _init_weights(model: torch.nn.Module, *, seed: int, std: float) -> None:
    """Normal(0, std) matrices, unit norm weights, zero biases, from a local generator."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if param.ndim >= 2:
            param.copy_(torch.randn(param.shape, generator=generator) * std)
        elif name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            param.zero_()
