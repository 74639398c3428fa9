"""Dense merge methods against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from prefvec.errors import ValidationError
from prefvec.merging import available_methods, get_method, merge_dense, tensor_seed
from prefvec.merging.methods import keep_count

# Three vectors of five entries; weights (1, 0.5, 2); density 0.6 keeps 3 of 5 entries each.
D1 = [1.0, -2.0, 0.5, 3.0, -0.1]  # trimmed: [1, -2, 0, 3, 0]
D2 = [-1.5, 0.4, 2.0, -0.2, 1.0]  # trimmed: [-1.5, 0, 2, 0, 1]
D3 = [0.3, -0.6, -0.7, 0.8, 0.9]  # trimmed: [0, 0, -0.7, 0.8, 0.9]
W = [1.0, 0.5, 2.0]


def _deltas(*rows: list[float], name: str = "p") -> list[dict[str, torch.Tensor]]:
    return [{name: torch.tensor(r)} for r in rows]


def test_registry_lists_methods_and_alias() -> None:
    names = available_methods()
    for m in ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "magnitude"):
        assert m in names
    assert get_method("task_arithmetic") is get_method("linear")


def test_unknown_method_names_value_and_known_ones() -> None:
    with pytest.raises(ValidationError) as err:
        get_method("slerpy")
    assert "'slerpy'" in err.value.message and "ties" in err.value.message
    with pytest.raises(ValidationError, match="slerpy"):
        merge_dense(_deltas(D1), [1.0], method="slerpy")


def test_linear_by_hand() -> None:
    # 1·D1 + 0.5·D2 + 2·D3, entry by entry.
    expected = torch.tensor([0.85, -3.0, 0.1, 4.5, 2.2])
    out = merge_dense(_deltas(D1, D2, D3), W, method="linear")["p"]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    out2 = merge_dense(_deltas(D1, D2, D3), W, method="task_arithmetic", density=0.3)["p"]
    assert torch.equal(out, out2)  # density is ignored by linear


def test_linear_negative_weights_cancel_exactly() -> None:
    out = merge_dense(_deltas(D1, D1), [1.0, -1.0])["p"]
    assert torch.equal(out, torch.zeros(5))


def test_magnitude_by_hand() -> None:
    # trimmed: [1,-2,0,3,0], [-1.5,0,2,0,1], [0,0,-0.7,0.8,0.9]; weighted sum with (1, 0.5, 2).
    expected = torch.tensor([0.25, -2.0, -0.4, 4.6, 2.3])
    out = merge_dense(_deltas(D1, D2, D3), W, method="magnitude", density=0.6)["p"]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_ties_by_hand() -> None:
    # weighted trimmed contributions:
    #   k1 [1, -2, 0, 3, 0]; k2 [-0.75, 0, 1, 0, 0.5]; k3 [0, 0, -1.4, 1.6, 1.8]
    # sum [0.25, -2, -0.4, 4.6, 2.3] -> elected signs [+, -, -, +, +]
    # agreeing (disjoint sum): e0 {k1} 1; e1 {k1} -2; e2 {k3} -1.4; e3 {k1,k3} 4.6; e4 {k2,k3} 2.3
    expected = torch.tensor([1.0, -2.0, -1.4, 4.6, 2.3])
    out = merge_dense(_deltas(D1, D2, D3), W, method="ties", density=0.6)["p"]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_ties_negative_weight_by_hand() -> None:
    # weights (1, -1), density 1: contributions a [1,-1,2,0.5], -b [-0.5,-1,-1,2]
    # sum [0.5,-2,1,2.5] -> [+,-,+,+]; e0 {a} 1; e1 {a,b} -1-1; e2 {a} 2; e3 {a,b} 0.5+2
    a, b = [1.0, -1.0, 2.0, 0.5], [0.5, 1.0, 1.0, -2.0]
    out = merge_dense(_deltas(a, b), [1.0, -1.0], method="ties", density=1.0)["p"]
    torch.testing.assert_close(out, torch.tensor([1.0, -2.0, 2.0, 2.5]), rtol=0, atol=1e-6)
    # the same vector at +1 and -1 elects sign 0 everywhere: the merge cancels
    assert torch.equal(merge_dense(_deltas(a, a), [1.0, -1.0], method="ties")["p"], torch.zeros(4))


def test_ties_weights_scale_and_single_vector_equals_linear() -> None:
    one = merge_dense(_deltas(D1), [1.0], method="ties", density=1.0)["p"]
    two = merge_dense(_deltas(D1), [2.0], method="ties", density=1.0)["p"]
    assert torch.equal(one, torch.tensor(D1)) and torch.equal(two, 2 * one)


def test_keep_count_rounding() -> None:
    assert keep_count(0.6, 5) == 3
    assert keep_count(0.5, 5) == 3  # 2.5 rounds half up
    assert keep_count(0.01, 5) == 1  # never below one
    assert keep_count(1.0, 7) == 7


def _dare_mask(shape: tuple[int, ...], seed: int, name: str, density: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(tensor_seed(seed, name))
    return torch.rand(shape, generator=gen, dtype=torch.float32) < density


def test_dare_linear_reproduces_mask_and_rescale() -> None:
    torch.manual_seed(0)
    stacked = torch.randn(3, 40, 25)
    deltas = [{"w": stacked[k]} for k in range(3)]
    weights = [0.7, -1.2, 0.4]
    out = merge_dense(deltas, weights, method="dare_linear", density=0.3, seed=11)["w"]
    keep = _dare_mask((3, 40, 25), 11, "w", 0.3)
    expected = sum(w * (stacked[k] * keep[k] / 0.3) for k, w in enumerate(weights))
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    # keep fraction near density; survivors rescaled by exactly 1/density, the rest zero
    single = merge_dense(deltas[:1], [1.0], method="dare_linear", density=0.3, seed=11)["w"]
    kept = single != 0
    assert abs(kept.float().mean().item() - 0.3) < 0.05
    torch.testing.assert_close(single[kept], stacked[0][kept] / 0.3, rtol=1e-6, atol=0)


def test_dare_is_seeded_per_tensor() -> None:
    x = torch.randn(200)
    deltas = [{"a": x, "b": x.clone()}]
    r1 = merge_dense(deltas, [1.0], method="dare_linear", density=0.5, seed=3)
    r2 = merge_dense(deltas, [1.0], method="dare_linear", density=0.5, seed=3)
    r3 = merge_dense(deltas, [1.0], method="dare_linear", density=0.5, seed=4)
    assert torch.equal(r1["a"], r2["a"]) and torch.equal(r1["b"], r2["b"])  # same seed: bit-same
    assert not torch.equal(r1["a"], r3["a"])  # another seed: another mask
    assert not torch.equal(r1["a"], r1["b"])  # another tensor name: another mask


def test_dare_ties_matches_ties_of_dropped_deltas() -> None:
    a, b = [1.0, -1.0, 2.0, 0.5], [0.5, 1.0, 1.0, -2.0]
    # density 1 drops nothing: TIES without trim (hand values of test_ties_negative_weight_by_hand)
    out = merge_dense(_deltas(a, b), [1.0, -1.0], method="dare_ties", density=1.0)["p"]
    torch.testing.assert_close(out, torch.tensor([1.0, -2.0, 2.0, 2.5]), rtol=0, atol=1e-6)
    # density 0.5: reproduce the mask, then apply the TIES rule by hand, entry by entry
    d = torch.tensor([a, b]) * _dare_mask((2, 4), 5, "p", 0.5) / 0.5
    c = d * torch.tensor([[1.0], [-1.0]])
    expected = []
    for j in range(4):
        s = math.copysign(1.0, c[:, j].sum().item()) if c[:, j].sum() != 0 else 0.0
        agree = [k for k in range(2) if s != 0 and torch.sign(c[k, j]).item() == s]
        expected.append(sum(c[k, j].item() for k in agree) if agree else 0.0)
    out = merge_dense(_deltas(a, b), [1.0, -1.0], method="dare_ties", density=0.5, seed=5)["p"]
    torch.testing.assert_close(out, torch.tensor(expected), rtol=0, atol=1e-6)


def test_union_of_keys_missing_is_zero() -> None:
    deltas = [{"x": torch.tensor([1.0, 2.0])}, {"y": torch.tensor([3.0])}]
    out = merge_dense(deltas, [2.0, -1.0])
    assert torch.equal(out["x"], torch.tensor([2.0, 4.0]))
    assert torch.equal(out["y"], torch.tensor([-3.0]))


def test_dtype_preserved_and_computed_in_fp32() -> None:
    deltas = _deltas(D1, D2)
    bf = [{k: v.to(torch.bfloat16) for k, v in d.items()} for d in deltas]
    out = merge_dense(bf, [1.0, 1.0])["p"]
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weight_named(bad: float) -> None:
    with pytest.raises(ValidationError) as err:
        merge_dense(_deltas(D1, D2), [1.0, bad])
    assert "weights[1]" in err.value.message and str(bad) in err.value.message


def test_input_problems_gathered() -> None:
    deltas = [{"p": torch.zeros(3)}, {"p": torch.zeros(4)}]
    with pytest.raises(ValidationError) as err:
        merge_dense(deltas, [1.0], method="ties", density=1.5)
    msg = err.value.message
    assert "(3,)" in msg and "(4,)" in msg  # shape mismatch named
    assert "1.5" in msg  # density named
    assert "got 1" in msg  # weight count named
    assert len(err.value.problems) == 3
