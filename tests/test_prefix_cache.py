"""Prefix caching in `HFPolicy.generate` (``sessions=``): same samples, fewer tokens run."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pytest
import torch

from mgrpo_algos.policies import GenerationOutput, HFPolicy
from mgrpo_algos.policies.decoding import LlamaStaticDecoder
from mgrpo_algos.policies.sampling import LeftPadded, left_pad

WORDS = ["search", "sea", "tool", "answer", "page", "find", "the", "Paris", "capital"]
OPENERS = ["find", "find the page of Paris and then the answer", "x", "search the sea tool"]
REPLIES = ["the page", "tool", "Paris is the capital of the sea", "answer 12"]


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    return HFPolicy.tiny(WORDS, size="micro", seed=0, max_positions=512)


@pytest.fixture
def prefilled(monkeypatch) -> list[list[int]]:
    """Records, per fast-decoder prefill, how many prompt tokens each row ran."""
    calls: list[list[int]] = []
    prefill = LlamaStaticDecoder.prefill

    def spy(self: LlamaStaticDecoder, batch: LeftPadded) -> torch.Tensor:
        calls.append(batch.mask.sum(1).tolist())
        return prefill(self, batch)

    monkeypatch.setattr(LlamaStaticDecoder, "prefill", spy)
    return calls


def _seed(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _openers(policy: HFPolicy, texts: Sequence[str] = OPENERS) -> list[list[int]]:
    return [policy.encode_chat([{"role": "user", "content": text}]) for text in texts]


def _continue(
    policy: HFPolicy, prompt: list[int], out: GenerationOutput, row: int, text: str
) -> list[int]:
    """The next turn's prompt, as the rollout engine builds it."""
    closing = [] if out.finished[row] else [policy.eos_id]
    return (
        prompt
        + out.completion_ids[row]
        + closing
        + policy.encode_message({"role": "user", "content": text})
    )


def _generate(
    policy: HFPolicy,
    prompts: list[list[int]],
    seed: int,
    sessions: Sequence[Hashable | None] | None = None,
    **kwargs,
) -> GenerationOutput:
    options = {"max_new_tokens": 10, "temperature": 0.9, **kwargs}
    return policy.generate(prompts, generator=_seed(seed), sessions=sessions, **options)


def _assert_same(a: GenerationOutput, b: GenerationOutput) -> None:
    assert a.completion_ids == b.completion_ids and a.finished == b.finished
    for x, y in zip(a.logprobs, b.logprobs, strict=True):
        assert x == pytest.approx(y, abs=1e-4)


def _assert_recomputed(
    policy: HFPolicy, prompts: list[list[int]], out: GenerationOutput, temperature: float = 0.9
) -> None:
    sequences = [p + c for p, c in zip(prompts, out.completion_ids, strict=True)]
    batch = left_pad(sequences, pad_id=policy.pad_id)
    with torch.no_grad():  # at the sampling temperature (`_generate`'s 0.9)
        recomputed = policy.logprobs(batch.ids, batch.mask, temperature)  # (B, T-1)
    width = batch.ids.shape[1]
    for row, (ids, logps) in enumerate(zip(out.completion_ids, out.logprobs, strict=True)):
        expected = recomputed[row, width - 1 - len(ids) :]
        assert torch.allclose(expected, torch.tensor(logps), atol=1e-4), row


def _cached_length(prompt: list[int], out: GenerationOutput, row: int) -> int:
    """Tokens a keyed row leaves cached: its prompt and all but its last sampled token."""
    return len(prompt) + len(out.completion_ids[row]) - 1


def test_multi_turn_reuses_the_cache_and_samples_the_same(
    policy: HFPolicy, prefilled: list[list[int]], monkeypatch
) -> None:
    # Frequent stop tokens: completions of different lengths, some ending on a
    # stop token and some cut at max_new_tokens (then the engine appends EOS),
    # and finished rows leave the batch mid-generation (their cache must survive).
    dropped: list[int] = []
    select = LlamaStaticDecoder.select

    def spy(self: LlamaStaticDecoder, rows: torch.Tensor) -> None:
        if self.keep:
            dropped.append(len(self.rows) - len(rows))
        select(self, rows)

    monkeypatch.setattr(LlamaStaticDecoder, "select", spy)
    stops = policy.encode("aeiou etn")
    prompts = _openers(policy)
    keys = ["a", "b", "c", "d"]
    policy.release()
    seen_cut = seen_stop = False
    previous = [0] * len(prompts)  # tokens each row has cached
    for turn in range(4):
        prefilled.clear()
        cached = _generate(policy, prompts, turn, keys, stop_ids=stops, max_new_tokens=12)
        plain = _generate(policy, prompts, turn, stop_ids=stops, max_new_tokens=12)
        _assert_same(cached, plain)
        _assert_recomputed(policy, prompts, cached)
        assert prefilled[0] == [len(p) - n for p, n in zip(prompts, previous, strict=True)]
        previous = [_cached_length(p, cached, row) for row, p in enumerate(prompts)]
        assert policy.cache_tokens == sum(previous)
        seen_cut |= not all(cached.finished)
        seen_stop |= any(cached.finished)
        prompts = [
            _continue(policy, p, cached, row, REPLIES[(row + turn) % 4])
            for row, p in enumerate(prompts)
        ]
    assert seen_cut and seen_stop and dropped
    policy.release()
    assert policy.cache_tokens == 0


def test_rows_with_and_without_keys_interleave(
    policy: HFPolicy, prefilled: list[list[int]]
) -> None:
    policy.release()
    prompts = _openers(policy)
    first = _generate(policy, prompts, 0, [None, 1, None, 3])
    assert policy.cache_tokens == sum(_cached_length(prompts[r], first, r) for r in (1, 3))
    prompts = [_continue(policy, p, first, row, "tool") for row, p in enumerate(prompts)]
    prefilled.clear()
    # Row 0 gets a key now, row 3 loses it; rows 1 and 3 keep their entries.
    second = _generate(policy, prompts, 1, [0, 1, None, None])
    _assert_same(second, _generate(policy, prompts, 1))
    _assert_recomputed(policy, prompts, second)
    from_first = len(prompts[1]) - _cached_length(_openers(policy)[1], first, 1)
    assert prefilled[0] == [len(prompts[0]), from_first, len(prompts[2]), len(prompts[3])]
    stored = [_cached_length(prompts[r], second, r) for r in (0, 1)]
    stored.append(_cached_length(_openers(policy)[3], first, 3))
    assert policy.cache_tokens == sum(stored)
    policy.release()


def test_prefix_mismatch_replaces_the_entry(policy: HFPolicy, prefilled: list[list[int]]) -> None:
    policy.release()
    prompts = _openers(policy)
    first = _generate(policy, prompts, 0, ["a", "b", "c", "d"])
    changed = [list(p) for p in prompts]
    # Row 0: a new conversation; row 1: an edited last token (the common prefix
    # is reused); rows 2 and 3: the same conversations continued.
    changed[0] = policy.encode_chat([{"role": "user", "content": "Paris"}])
    changed[1][-2] = policy.encode("tool")[0]
    changed[2] = _continue(policy, prompts[2], first, 2, "sea")
    changed[3] = _continue(policy, prompts[3], first, 3, "page")
    prefilled.clear()
    second = _generate(policy, changed, 1, ["a", "b", "c", "d"])
    _assert_same(second, _generate(policy, changed, 1))
    _assert_recomputed(policy, changed, second)
    header = 2  # <|bos|><|user|> starts every opener: reused even for the new conversation
    cached = [_cached_length(prompts[r], first, r) for r in (2, 3)]
    assert prefilled[0] == [
        len(changed[0]) - header,
        2,
        len(changed[2]) - cached[0],
        len(changed[3]) - cached[1],
    ]
    assert policy.cache_tokens == sum(_cached_length(p, second, r) for r, p in enumerate(changed))
    policy.release()


def test_repeating_a_cached_prompt_runs_its_last_token(
    policy: HFPolicy, prefilled: list[list[int]]
) -> None:
    policy.release()
    prompts = _openers(policy)[:2]
    _generate(policy, prompts, 0, ["a", "b"])
    prefilled.clear()
    again = _generate(policy, prompts, 1, ["a", "b"])
    assert prefilled[0] == [1, 1]
    _assert_same(again, _generate(policy, prompts, 1))
    policy.release()


def test_partial_release_and_release_all(policy: HFPolicy, prefilled: list[list[int]]) -> None:
    policy.release()
    prompts = _openers(policy)
    first = _generate(policy, prompts, 0, ["a", "b", "c", "d"])
    prompts = [_continue(policy, p, first, row, "find") for row, p in enumerate(prompts)]
    before = policy.cache_tokens
    policy.release(["b", "d", "never used"])
    kept = [_cached_length(_openers(policy)[r], first, r) for r in (0, 2)]
    assert before > policy.cache_tokens == sum(kept)
    prefilled.clear()
    second = _generate(policy, prompts, 1, ["a", "b", "c", "d"])
    _assert_same(second, _generate(policy, prompts, 1))
    assert prefilled[0] == [
        len(prompts[0]) - kept[0],
        len(prompts[1]),
        len(prompts[2]) - kept[1],
        len(prompts[3]),
    ]
    policy.release()
    assert policy.cache_tokens == 0
    prompts = [_continue(policy, p, second, row, "sea") for row, p in enumerate(prompts)]
    prefilled.clear()
    third = _generate(policy, prompts, 2, ["a", "b", "c", "d"])
    assert prefilled[0] == [len(p) for p in prompts]
    _assert_same(third, _generate(policy, prompts, 2))
    assert policy.cache_tokens == sum(_cached_length(p, third, r) for r, p in enumerate(prompts))
    policy.release()


def test_weight_update_drops_the_cache(prefilled: list[list[int]]) -> None:
    policy = HFPolicy.tiny(WORDS, size="micro", seed=3, max_positions=256)
    prompts = _openers(policy)
    first = _generate(policy, prompts, 0, ["a", "b", "c", "d"])
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    loss = -policy.logprobs(*left_pad(prompts, pad_id=policy.pad_id)[:2]).sum()
    loss.backward()
    optimizer.step()
    prompts = [_continue(policy, p, first, row, "page") for row, p in enumerate(prompts)]
    prefilled.clear()
    second = _generate(policy, prompts, 1, ["a", "b", "c", "d"])
    assert prefilled[0] == [len(p) for p in prompts]
    _assert_recomputed(policy, prompts, second)


def test_generic_decoder_ignores_sessions(policy: HFPolicy) -> None:
    generic = HFPolicy(policy.model, policy.tokenizer, fast_decode=False)
    prompts = _openers(policy)
    out = _generate(generic, prompts, 0, ["a", "b", "c", "d"])
    assert generic.cache_tokens == 0
    _assert_same(out, _generate(generic, prompts, 0))
    generic.release(["a"])


def test_bad_sessions_are_rejected(policy: HFPolicy) -> None:
    prompts = _openers(policy)
    with pytest.raises(ValueError, match=r"one session key per prompt \(4\); got 3"):
        _generate(policy, prompts, 0, ["a", "b", "c"])
    with pytest.raises(ValueError, match="distinct session keys.*'a'"):
        _generate(policy, prompts, 0, ["a", None, "a", None])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        _generate(policy, [prompts[0], []], 0, ["a", "b"])


@pytest.mark.slow
def test_smollm2_multi_turn_with_sessions() -> None:
    pytest.importorskip("gguf")
    try:
        smollm = HFPolicy.smollm2()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    assert LlamaStaticDecoder.supports(smollm.model)  # grouped-query attention, real weights
    prompts = [
        smollm.encode_chat([{"role": "user", "content": text}])
        for text in ("Hi!", "Name three colours.", "What is 2 + 2?")
    ]
    for turn in range(3):
        cached = _generate(smollm, prompts, turn, [0, 1, 2], max_new_tokens=8)
        _assert_same(cached, _generate(smollm, prompts, turn, max_new_tokens=8))
        _assert_recomputed(smollm, prompts, cached)
        prompts = [
            _continue(smollm, p, cached, row, "Tell me more.") for row, p in enumerate(prompts)
        ]
    smollm.release()
