"""The RL math of ``mgrpo_algos.functional``, against numbers worked out by hand."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrpo_algos.functional import (
    clip_active,
    clipped_surrogate,
    entropy_from_logits,
    group_advantages,
    kl_k3,
    loss_dapo,
    loss_dr_grpo,
    loss_grpo,
    loss_gspo,
    masked_mean,
    masked_sum,
    policy_loss,
    policy_ratio_sequence,
    policy_ratio_token,
)

F64 = torch.float64
LN2 = math.log(2.0)


def t(values, dtype=F64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


# --------------------------------------------------------------------------- reductions


def test_masked_sum_and_mean_by_hand() -> None:
    values = t([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    mask = t([[1, 1, 0], [0, 0, 0]])
    close(masked_sum(values, mask), 3.0)  # 1 + 2
    close(masked_sum(values, mask, dim=1), [3.0, 0.0])
    close(masked_mean(values, mask, dim=1), [1.5, 0.0])  # empty row: 0, not NaN
    with pytest.raises(ValueError, match=r"mask has shape \(2,\), expected \(2, 3\)"):
        masked_sum(values, t([1, 1]))


# --------------------------------------------------------------------------- advantages

REWARDS = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5]
GROUPS = [0, 0, 0, 0, 1, 1]


def test_group_scaling_by_hand() -> None:
    # group 0: mean 0.5, population std 0.5 -> (r - 0.5) / 0.5 = [1, -1, -1, 1]
    # group 1: all 0.5, std 0 -> exactly 0
    adv = group_advantages(t(REWARDS), torch.tensor(GROUPS), "group")
    assert adv.tolist() == [1.0, -1.0, -1.0, 1.0, 0.0, 0.0]


def test_batch_scaling_by_hand() -> None:
    # centred by group mean: [0.5, -0.5, -0.5, 0.5, 0, 0]
    # batch: mean 0.5, squared deviations 4 * 0.25 = 1, var 1/6, std 1/sqrt(6)
    # 0.5 * sqrt(6) = 1.2247449
    adv = group_advantages(t(REWARDS), torch.tensor(GROUPS), "batch")
    a = 0.5 * math.sqrt(6.0)
    close(adv, [a, -a, -a, a, 0.0, 0.0])


def test_no_scaling_by_hand() -> None:
    adv = group_advantages(t(REWARDS), torch.tensor(GROUPS), "none")
    close(adv, [0.5, -0.5, -0.5, 0.5, 0.0, 0.0])


def test_unequal_group_sizes_and_arbitrary_labels() -> None:
    # group 7: [3, 0, 0], mean 1, centred [2, -1, -1], var (4 + 1 + 1) / 3 = 2
    #   -> [2, -1, -1] / sqrt(2)
    # group 2: [2, 4], mean 3, centred [-1, 1], std 1 -> [-1, 1]
    adv = group_advantages(t([3.0, 0.0, 0.0, 2.0, 4.0]), torch.tensor([7, 7, 7, 2, 2]))
    s = math.sqrt(2.0)
    close(adv, [2 / s, -1 / s, -1 / s, -1.0, 1.0])


def test_interleaved_groups() -> None:
    # group 0 (positions 0, 2): [1, 3] -> mean 2, std 1 -> [-1, 1]; group 1: all 5 -> 0
    adv = group_advantages(t([1.0, 5.0, 3.0, 5.0]), torch.tensor([0, 1, 0, 1]))
    assert adv.tolist() == [-1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equal_rewards_give_exact_zeros(scale, dtype) -> None:
    # 0.1 is not exact in binary: the mean differs from each reward by rounding
    # noise, which must not be divided by a tiny std
    rewards = torch.full((5,), 0.1, dtype=dtype)
    adv = group_advantages(rewards, torch.tensor([0, 0, 0, 1, 1]), scale)
    assert adv.tolist() == [0.0] * 5
    assert adv.dtype == dtype


def test_singleton_groups_give_zero() -> None:
    adv = group_advantages(t([3.0, -2.0]), torch.tensor([0, 1]))
    assert adv.tolist() == [0.0, 0.0]


def test_integer_rewards_give_float32_and_empty_input_is_empty() -> None:
    adv = group_advantages(torch.tensor([1, 0]), torch.tensor([0, 0]))
    assert adv.dtype == torch.float32
    assert adv.tolist() == [1.0, -1.0]
    assert group_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_group_advantages_rejects_bad_input() -> None:
    r, g = t([1.0, 0.0]), torch.tensor([0, 0])
    with pytest.raises(ValueError, match=r"scale must be one of \('group', 'batch', 'none'\)"):
        group_advantages(r, g, "std")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"group_ids has shape \(3,\), expected \(2,\)"):
        group_advantages(r, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="group_ids must be an integer tensor, got dtype"):
        group_advantages(r, t([0.0, 0.0]))
    with pytest.raises(ValueError, match=r"rewards must be 1-D \(N,\), got shape \(1, 2\)"):
        group_advantages(r[None], g)
    with pytest.raises(ValueError, match="eps must be > 0, got 0"):
        group_advantages(r, g, eps=0)


def test_group_advantages_does_not_modify_inputs() -> None:
    r, g = t(REWARDS), torch.tensor(GROUPS)
    group_advantages(r, g)
    assert r.tolist() == REWARDS and g.tolist() == GROUPS


rewards_and_groups = st.integers(min_value=1, max_value=24).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n),
        st.lists(st.integers(0, 3), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(rewards_and_groups)
def test_group_scaling_gives_zero_mean_unit_std_per_group(data) -> None:
    rewards, groups = t(data[0]), torch.tensor(data[1])
    adv = group_advantages(rewards, groups, "group")
    assert torch.isfinite(adv).all()
    for g in groups.unique():
        member = groups == g
        if rewards[member].std(unbiased=False) < 1e-6:
            assert (adv[member] == 0).all()
        else:
            close(adv[member].mean(), 0.0, atol=1e-9)
            close(adv[member].std(unbiased=False), 1.0, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(rewards_and_groups)
def test_unscaled_advantages_are_centred_rewards(data) -> None:
    rewards, groups = t(data[0]), torch.tensor(data[1])
    adv = group_advantages(rewards, groups, "none")
    for g in groups.unique():
        member = groups == g
        close(adv[member], rewards[member] - rewards[member].mean(), atol=1e-6)


# --------------------------------------------------------------------------- ratios, KL


def test_token_ratio_by_hand() -> None:
    logp, old = t([[0.6, 0.3]]).log(), t([[0.5, 0.6]]).log()
    close(policy_ratio_token(logp, old), [[1.2, 0.5]])  # 0.6 / 0.5, 0.3 / 0.6


def test_sequence_ratio_by_hand() -> None:
    old = torch.zeros(3, 3, dtype=F64)
    logp = t([[0.2, 0.4, 9.0], [-0.6, 5.0, 5.0], [1.0, 1.0, 1.0]])
    mask = t([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    # row 0: mean(0.2, 0.4) = 0.3; row 1: -0.6; row 2: no tokens -> ratio 1
    close(policy_ratio_sequence(logp, old, mask), [math.exp(0.3), math.exp(-0.6), 1.0])


def test_k3_by_hand() -> None:
    # d = ref - logp; k3 = e^d - d - 1
    # d = ln 2: 2 - ln 2 - 1 = 1 - ln 2; d = -ln 2: 1/2 + ln 2 - 1 = ln 2 - 1/2; d = 0: 0
    logp = t([[0.0, 0.0, -1.0]])
    ref = t([[LN2, -LN2, -1.0]])
    close(kl_k3(logp, ref), [[1 - LN2, LN2 - 0.5, 0.0]])


def test_k3_is_never_negative() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(64, 64, generator=gen) * 1e-4
    ref = logp + torch.randn(64, 64, generator=gen) * 1e-6
    assert (kl_k3(logp, ref) >= 0).all()


def test_entropy_by_hand() -> None:
    # uniform over 4: ln 4; [0, -inf]: a sure token, 0;
    # p = [1/4, 3/4] (logits 0, ln 3): -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351
    logits = t([[[0.0, 0.0, 0.0, 0.0], [0.0, -math.inf, -math.inf, -math.inf]]])
    h = entropy_from_logits(logits)
    close(h, [[math.log(4.0), 0.0]])
    two = entropy_from_logits(t([[[0.0, math.log(3.0)]]]))
    close(two, [[-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]])
    with pytest.raises(ValueError, match=r"logits must be 3-D \(B, T, V\), got shape \(2, 4\)"):
        entropy_from_logits(torch.zeros(2, 4))


# --------------------------------------------------------------------------- surrogate
#
# The 2 x 3 example used below. eps = 0.2, eps_high = 0.28: the ratio range is [0.8, 1.28].
#   mask        [[1,   1,   0  ], [1,   1,   1  ]]
#   advantages  [ 1,              -0.5           ]
#   ratio       [[1.1, 1.5, pad], [0.9, 0.5, 1.0]]
# row 0 (A = 1):    1.1 -> -1.1 ;  1.5 > 1.28, clipped -> -min(1.5, 1.28) = -1.28
# row 1 (A = -0.5): 0.9 -> -(-0.45) = 0.45 ;
#                   0.5 < 0.8, clipped -> -min(-0.25, -0.4) = 0.4 ;  1.0 -> 0.5
# per-token loss    [[-1.1, -1.28], [0.45, 0.4, 0.5]]

MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
ADV = [1.0, -0.5]
RATIO = [[1.1, 1.5, 1.0], [0.9, 0.5, 1.0]]
OLD = [[-1.0, -2.0, -100.0], [-0.5, -1.5, -2.5]]
PER_TOKEN = [[-1.1, -1.28, 0.0], [0.45, 0.4, 0.5]]


def example(pad_logp: float = 0.0, requires_grad: bool = False):
    """``logp = old + ln(ratio)``; the padded position holds ``pad_logp`` (old: -100)."""
    logp = t(OLD) + t(RATIO).log()
    logp[0, 2] = pad_logp
    logp.requires_grad_(requires_grad)
    return logp, t(OLD), t(ADV), t(MASK)


def test_clipped_surrogate_by_hand() -> None:
    ratio = t(RATIO)
    loss = clipped_surrogate(ratio, t(ADV), 0.2, 0.28)
    close(loss * t(MASK), PER_TOKEN)
    assert clip_active(ratio, t(ADV), 0.2, 0.28).tolist() == [
        [False, True, False],
        [False, True, False],
    ]


def test_clip_is_symmetric_without_epsilon_high_and_inactive_on_the_other_side() -> None:
    # eps_high defaults to eps: 1.25 > 1.2 is clipped for A > 0 -> -1.2
    close(clipped_surrogate(t([1.25]), t([1.0]), 0.2), [-1.2])
    # 1.25 with A < 0: -min(-1.25, -1.2) = 1.25 (unclipped branch, gradient kept)
    close(clipped_surrogate(t([1.25]), t([-1.0]), 0.2), [1.25])
    assert not clip_active(t([1.25]), t([-1.0]), 0.2).item()
    assert not clip_active(t([5.0]), t([0.0]), 0.2).item()  # A = 0 never clips


def test_surrogate_rejects_mismatched_advantages() -> None:
    with pytest.raises(ValueError, match=r"advantages has shape \(3,\), expected \(2,\)"):
        clipped_surrogate(t(RATIO), t([1.0, 2.0, 3.0]))


# --------------------------------------------------------------------------- aggregations


def test_the_default_clip_is_symmetric() -> None:
    """GRPO's and TRL's clip (0.2, 0.2) unless clip-higher is asked for."""
    logp, old, adv, mask = example()
    default, _ = policy_loss(logp, old, adv, mask, loss_type="grpo")
    symmetric, _ = policy_loss(logp, old, adv, mask, loss_type="grpo", epsilon_high=0.2)
    higher, _ = policy_loss(logp, old, adv, mask, loss_type="grpo", epsilon_high=0.28)
    assert float(default) == float(symmetric) != float(higher)


def test_aggregations_by_hand() -> None:
    per_token, mask = t(PER_TOKEN), t(MASK)
    # grpo: row means -2.38 / 2 = -1.19 and 1.35 / 3 = 0.45 -> (-1.19 + 0.45) / 2 = -0.37
    close(loss_grpo(per_token, mask), -0.37)
    # dr_grpo: sum -2.38 + 1.35 = -1.03 over max_tokens * B = 3 * 2 -> -0.1716667
    close(loss_dr_grpo(per_token, mask), -1.03 / 6)
    close(loss_dr_grpo(per_token, mask, max_tokens=4), -1.03 / 8)
    # dapo: -1.03 over the 5 generated tokens -> -0.206
    close(loss_dapo(per_token, mask), -0.206)
    # gspo: mean of per-sequence losses; a row without tokens counts as 0
    close(loss_gspo(t([-1.0, 0.5, 7.0]), t([[1, 0], [1, 1], [0, 0]])), (-1.0 + 0.5) / 3)
    with pytest.raises(ValueError, match="max_tokens must be a positive int, got 0"):
        loss_dr_grpo(per_token, mask, max_tokens=0)


@pytest.mark.parametrize(
    ("loss_type", "kwargs", "expected"),
    [
        ("grpo", {}, -0.37),
        ("dr_grpo", {}, -1.03 / 6),
        ("dr_grpo", {"max_tokens": 4}, -1.03 / 8),
        ("dapo", {}, -0.206),
    ],
)
def test_policy_loss_by_hand(loss_type, kwargs, expected) -> None:
    logp, old, adv, mask = example()
    # PER_TOKEN was worked out with DAPO's clip-higher (0.2, 0.28)
    loss, stats = policy_loss(
        logp, old, adv, mask, loss_type=loss_type, epsilon_high=0.28, **kwargs
    )
    close(loss, expected)
    close(stats["clip_ratio"], 2 / 5)  # one high (1.5, A > 0), one low (0.5, A < 0)
    close(stats["clip_ratio_high"], 1 / 5)
    close(stats["clip_ratio_low"], 1 / 5)
    close(stats["ratio_mean"], (1.1 + 1.5 + 0.9 + 0.5 + 1.0) / 5)  # = 1.0
    close(stats["kl"], 0.0)


# KL for the same example: d = ref - logp = [[ln 2, -ln 2, pad], [0, ln 2, -ln 2]]
# k3 = [[1 - ln 2, ln 2 - 1/2], [0, 1 - ln 2, ln 2 - 1/2]]; each row sums to 1/2
# row means 1/4 and 1/6; mean over the 5 tokens 1/5. beta = 0.1.
KL_D = [[LN2, -LN2, 3.0], [0.0, LN2, -LN2]]


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("grpo", -0.37 + 0.1 * (1 / 4 + 1 / 6) / 2),  # -0.3491667
        ("dr_grpo", (-1.03 + 0.1 * 1.0) / 6),  # -0.155
        ("dapo", (-1.03 + 0.1 * 1.0) / 5),  # -0.186
    ],
)
def test_policy_loss_with_kl_by_hand(loss_type, expected) -> None:
    logp, old, adv, mask = example()
    ref = logp.detach() + t(KL_D)
    kw = dict(beta=0.1, ref_logp=ref, epsilon_high=0.28)  # PER_TOKEN's clip-higher
    loss, stats = policy_loss(logp, old, adv, mask, loss_type=loss_type, **kw)
    close(loss, expected)
    close(stats["kl"], 1 / 5)


def test_gspo_by_hand_clipped() -> None:
    # row 0: s = (1.1 * 1.5) ** (1/2) = 1.2845233 > 1.28, A = 1 -> -1.28
    # row 1: s = (0.9 * 0.5 * 1.0) ** (1/3) = 0.7663094 < 0.8, A = -0.5 -> 0.4
    # loss (-1.28 + 0.4) / 2 = -0.44; every token sits in a clipped sequence
    logp, old, adv, mask = example(requires_grad=True)
    loss, stats = policy_loss(logp, old, adv, mask, loss_type="gspo", epsilon_high=0.28)
    close(loss, -0.44)
    close(stats["clip_ratio"], 1.0)
    s0, s1 = math.sqrt(1.65), 0.45 ** (1 / 3)
    close(stats["ratio_mean"], (2 * s0 + 3 * s1) / 5)
    loss.backward()
    assert logp.grad is not None and (logp.grad == 0).all()


def test_gspo_by_hand_unclipped_with_gradient_and_kl() -> None:
    # log-ratios row 0: [0.1, -0.1] -> s0 = e^0 = 1, A = 1 -> -1
    #            row 1: [0.3, 0, 0] -> s1 = e^0.1 = 1.1051709, A = -0.5 -> 0.5526, unclipped
    old = t(OLD)
    logp = (old + t([[0.1, -0.1, 50.0], [0.3, 0.0, 0.0]])).requires_grad_(True)
    adv, mask = t(ADV), t(MASK)
    s1 = math.exp(0.1)
    loss, stats = policy_loss(logp, old, adv, mask, loss_type="gspo")
    close(loss, (-1.0 + 0.5 * s1) / 2)
    close(stats["clip_ratio"], 0.0)
    # d loss / d logp_t = (1/B) * (-A_i) * s_i / |y_i| on the generated tokens:
    # row 0: 1/2 * -1 * 1 / 2 = -0.25; row 1: 1/2 * 0.5 * s1 / 3 = 0.0920976
    loss.backward()
    close(logp.grad, [[-0.25, -0.25, 0.0], [s1 / 12, s1 / 12, s1 / 12]])
    # with beta = 0.1 the sequence's mean k3 is added: + 0.1 * (1/4 + 1/6) / 2
    ref = logp.detach() + t(KL_D)
    kl_loss, kl_stats = policy_loss(logp, old, adv, mask, loss_type="gspo", beta=0.1, ref_logp=ref)
    close(kl_loss, (-1.0 + 0.5 * s1) / 2 + 0.1 * (1 / 4 + 1 / 6) / 2)
    close(kl_stats["kl"], 1 / 5)


def test_gradient_is_zero_off_the_mask_and_where_clipped() -> None:
    # grpo: d/d logp of -r A / |o_i| / B where unclipped (d r / d logp = r)
    # row 0: -1.1 * 1 / 2 / 2 = -0.275; 1.5 clipped -> 0; pad -> 0
    # row 1: 0.9 * 0.5 / 3 / 2 = 0.075; 0.5 clipped -> 0; 1.0 * 0.5 / 3 / 2 = 1/12
    logp, old, adv, mask = example(requires_grad=True)
    loss, _ = policy_loss(logp, old, adv, mask, loss_type="grpo")
    loss.backward()
    close(logp.grad, [[-0.275, 0.0, 0.0], [0.075, 0.0, 1 / 12]])


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "gspo"])
def test_padding_may_hold_anything(loss_type) -> None:
    # float32 ratio e^(0 - (-100)) overflows to inf at the padded position; with
    # beta > 0 the KL there would too. Neither may reach the loss or the gradient.
    logp, old, adv, mask = (x.float() for x in example())
    logp = logp.detach().requires_grad_(True)
    ref = torch.full_like(old, -math.inf)
    ref[mask > 0] = logp.detach()[mask > 0]
    loss, stats = policy_loss(logp, old, adv, mask, loss_type=loss_type, beta=0.1, ref_logp=ref)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in stats.values())
    assert logp.grad is not None and torch.isfinite(logp.grad).all()
    assert logp.grad[0, 2] == 0


def test_gradients_reach_logp_only_and_inputs_are_untouched() -> None:
    logp, old, adv, mask = example(requires_grad=True)
    old.requires_grad_(True)
    adv.requires_grad_(True)
    ref = (logp.detach() + t(KL_D)).requires_grad_(True)
    before = [x.detach().clone() for x in (logp, old, adv, mask, ref)]
    for loss_type in ("grpo", "dr_grpo", "dapo", "gspo"):
        loss, stats = policy_loss(logp, old, adv, mask, loss_type=loss_type, beta=0.1, ref_logp=ref)
        loss.backward()
        assert all(not v.requires_grad for v in stats.values())
    assert logp.grad is not None
    assert old.grad is None and adv.grad is None and ref.grad is None
    for x, b in zip((logp, old, adv, mask, ref), before, strict=True):
        assert torch.equal(x.detach(), b)


def test_policy_loss_rejects_bad_input() -> None:
    logp, old, adv, mask = example()
    with pytest.raises(
        ValueError, match=r"loss_type must be one of \('grpo', 'dr_grpo', 'dapo', 'gspo'\)"
    ):
        policy_loss(logp, old, adv, mask, loss_type="ppo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ref_logp is required when beta > 0"):
        policy_loss(logp, old, adv, mask, loss_type="grpo", beta=0.1)
    with pytest.raises(ValueError, match=r"old_logp has shape \(2, 2\), expected \(2, 3\)"):
        policy_loss(logp, old[:, :2], adv, mask, loss_type="grpo")
    with pytest.raises(ValueError, match=r"advantages has shape \(2, 1\), expected \(2,\)"):
        policy_loss(logp, old, adv[:, None], mask, loss_type="grpo")
    with pytest.raises(ValueError, match=r"logp must be 2-D \(B, T\), got shape \(3,\)"):
        policy_loss(logp[0], old[0], adv, mask[0], loss_type="grpo")
    with pytest.raises(ValueError, match="beta must be >= 0, got -1"):
        policy_loss(logp, old, adv, mask, loss_type="grpo", beta=-1)
    with pytest.raises(ValueError, match="max_tokens must be a positive int"):
        policy_loss(logp, old, adv, mask, loss_type="dr_grpo", max_tokens=0)


# --------------------------------------------------------------------------- TRL


def _trl_loss(trainer_cls, logp, old, adv, mask, ref, *, loss_type, beta, eps, eps_high):
    """Run TRL's own ``GRPOTrainer._compute_loss`` on a stand-in trainer.

    The stand-in carries only the attributes the method reads; the model call is
    replaced by one that returns ``logp``, so TRL's loss code runs unchanged on our
    tensors. GSPO is TRL's ``importance_sampling_level="sequence"`` with the grpo loss.
    """
    level = "sequence" if loss_type == "gspo" else "token"
    batch, length = logp.shape
    stub = SimpleNamespace(
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level=level,
        beta=beta,
        loss_type="grpo" if loss_type == "gspo" else loss_type,
        epsilon_low=eps,
        epsilon_high=eps_high,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=length,
        accelerator=SimpleNamespace(
            num_processes=1,
            reduce=lambda x, reduction="sum": x,
            gather=lambda x: x,
            gather_for_metrics=lambda x: x,
        ),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
    )
    inputs = {
        "prompt_ids": torch.zeros(batch, 1, dtype=torch.long),
        "prompt_mask": torch.ones(batch, 1, dtype=torch.long),
        "completion_ids": torch.zeros(batch, length, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    loss = trainer_cls._compute_loss(stub, None, inputs)
    return loss, stub._metrics["train"]


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "gspo"])
def test_matches_trl_grpo_loss(loss_type, beta) -> None:
    pytest.importorskip("trl")
    grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
    gen = torch.Generator().manual_seed(1234)
    batch, length = 6, 9
    base = -3 * torch.rand(batch, length, generator=gen)
    # per-sequence log-ratio shifts put GSPO's sequence ratios (about e^shift) on both
    # sides of the clip range, with advantages of both signs: rows 0 and 1 clipped,
    # rows 3 and 4 outside the range on the side that keeps its gradient
    shift = torch.tensor([[0.5], [-0.5], [0.0], [0.5], [-0.5], [0.0]])
    old = base - shift + 0.3 * torch.randn(batch, length, generator=gen)
    ref = base + 0.3 * torch.randn(batch, length, generator=gen)
    adv = torch.tensor([0.8, -1.2, 0.3, -0.6, 0.9, 0.5])
    mask = (torch.rand(batch, length, generator=gen) < 0.7).float()
    mask[:, 0] = 1.0
    mask[-1] = 0.0  # a sequence with no generated token
    eps, eps_high = 0.2, 0.28

    logp_ours = base.clone().requires_grad_(True)
    ours, stats = policy_loss(
        logp_ours, old, adv, mask, loss_type=loss_type,
        epsilon=eps, epsilon_high=eps_high, beta=beta, ref_logp=ref,
    )  # fmt: skip
    ours.backward()

    logp_trl = base.clone().requires_grad_(True)
    theirs, metrics = _trl_loss(
        grpo_trainer.GRPOTrainer, logp_trl, old, adv, mask, ref,
        loss_type=loss_type, beta=beta, eps=eps, eps_high=eps_high,
    )  # fmt: skip
    theirs.backward()

    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(logp_ours.grad, logp_trl.grad, atol=1e-5, rtol=0)
    if beta > 0:
        assert stats["kl"].item() == pytest.approx(metrics["kl"][0], abs=1e-5)
    assert 0 < stats["clip_ratio"].item() < 1  # the inputs do exercise clipping
    if loss_type != "gspo":  # TRL counts sequences, not tokens, at the sequence level
        assert stats["clip_ratio"].item() == pytest.approx(
            metrics["clip_ratio/region_mean"][0], abs=1e-6
        )
