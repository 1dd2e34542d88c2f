"""Accuracy-matrix metrics: hand-computed examples and hypothesis properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from obliviate.errors import ObliviateError
from obliviate.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    forgetting_per_experience,
    forward_transfer,
    learning_accuracy,
    summary,
)

# R[i, j]: accuracy on j after training on 0..i
R3 = np.array(
    [
        [0.9, 0.1, 0.2],
        [0.5, 0.8, 0.3],
        [0.4, 0.6, 0.7],
    ]
)
B3 = np.array([0.1, 0.2, 0.1])


def test_hand_computed_example():
    assert average_accuracy(R3) == pytest.approx((0.4 + 0.6 + 0.7) / 3)
    # BWT = ((0.4 - 0.9) + (0.6 - 0.8)) / 2
    assert backward_transfer(R3) == pytest.approx(-0.35)
    # FWT = ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((0.1 - 0.2) + (0.3 - 0.1)) / 2
    assert forward_transfer(R3, B3) == pytest.approx(0.05)
    # f_0 = max(0.9, 0.5) - 0.4, f_1 = max(0.1, 0.8) - 0.6
    np.testing.assert_allclose(forgetting_per_experience(R3), [0.5, 0.2])
    assert forgetting(R3) == pytest.approx(0.35)
    assert learning_accuracy(R3) == pytest.approx((0.9 + 0.8 + 0.7) / 3)


def test_forgetting_uses_max_over_all_earlier_rows():
    # experience 0 peaks after experience 1 (positive backward transfer), then drops
    r = np.array([[0.5, 0.0, 0.0], [0.9, 0.8, 0.0], [0.3, 0.8, 0.9]])
    np.testing.assert_allclose(forgetting_per_experience(r), [0.6, 0.0])
    assert backward_transfer(r) == pytest.approx(((0.3 - 0.5) + (0.8 - 0.8)) / 2)
    # the max includes rows before j was learned (Chaudhry et al. take l in 1..k-1)
    r2 = np.array([[0.9, 0.7, 0.0], [0.9, 0.5, 0.0], [0.9, 0.4, 0.9]])
    np.testing.assert_allclose(forgetting_per_experience(r2), [0.0, 0.3])


def test_single_experience():
    r = np.array([[0.8]])
    assert average_accuracy(r) == pytest.approx(0.8)
    assert learning_accuracy(r) == pytest.approx(0.8)
    assert math.isnan(backward_transfer(r))
    assert math.isnan(forward_transfer(r, [0.1]))
    assert math.isnan(forgetting(r))
    assert forgetting_per_experience(r).shape == (0,)


def test_summary_matches_functions():
    s = summary(R3, B3)
    assert s["acc"] == average_accuracy(R3)
    assert s["bwt"] == backward_transfer(R3)
    assert s["fwt"] == forward_transfer(R3, B3)
    assert s["forgetting"] == forgetting(R3)
    assert s["forgetting_per_experience"] == forgetting_per_experience(R3).tolist()
    assert s["learning_accuracy"] == learning_accuracy(R3)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 3)), "square"),
        (np.zeros((0, 0)), "square"),
        (np.zeros(3), "square"),
        (np.array([[0.5, np.nan], [0.5, 0.5]]), "NaN"),
        (np.array([[1.5]]), r"\[0, 1\]"),
        (np.array([[-0.1]]), r"\[0, 1\]"),
    ],
)
def test_bad_matrices_rejected(bad, match):
    with pytest.raises(ObliviateError, match=match):
        average_accuracy(bad)


def test_bad_baseline_rejected():
    with pytest.raises(ObliviateError, match="one entry per experience"):
        forward_transfer(R3, [0.1, 0.2])
    with pytest.raises(ObliviateError, match=r"\[0, 1\]"):
        forward_transfer(R3, [0.1, 0.2, 2.0])


# ---- properties ------------------------------------------------------------------------------
unit = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)


@st.composite
def matrices(draw, min_t=1, max_t=6):
    t = draw(st.integers(min_t, max_t))
    return draw(arrays(np.float64, (t, t), elements=unit))


@st.composite
def matrix_and_baseline(draw):
    r = draw(matrices())
    b = draw(arrays(np.float64, (r.shape[0],), elements=unit))
    return r, b


@settings(max_examples=150, deadline=None)
@given(matrix_and_baseline())
def test_ranges(rb):
    r, b = rb
    eps = 1e-12
    assert -eps <= average_accuracy(r) <= 1 + eps
    assert -eps <= learning_accuracy(r) <= 1 + eps
    if r.shape[0] > 1:
        for v in (backward_transfer(r), forward_transfer(r, b), forgetting(r)):
            assert -1 - eps <= v <= 1 + eps
        f = forgetting_per_experience(r)
        assert f.shape == (r.shape[0] - 1,)
        assert np.all(f >= -1 - eps) and np.all(f <= 1 + eps)


@settings(max_examples=150, deadline=None)
@given(matrices(min_t=2))
def test_forgetting_bounds_minus_bwt(r):
    # max over earlier rows >= the diagonal entry, so forgetting >= -BWT, per experience too
    assert forgetting(r) >= -backward_transfer(r) - 1e-12
    f = forgetting_per_experience(r)
    assert np.all(f >= np.diag(r)[:-1] - r[-1, :-1] - 1e-12)
    assert np.all(f <= 1.0 - r[-1, :-1] + 1e-12)


@settings(max_examples=100, deadline=None)
@given(matrices(min_t=2))
def test_non_decreasing_columns_never_forget(r):
    mono = np.maximum.accumulate(r, axis=0)  # every column non-decreasing in i
    assert np.all(forgetting_per_experience(mono) <= 1e-12)
    assert backward_transfer(mono) >= -1e-12
    # the running max of a non-decreasing column is its second-to-last entry
    np.testing.assert_allclose(forgetting_per_experience(mono), mono[-2, :-1] - mono[-1, :-1])
    flat = mono.copy()
    flat[-1] = flat[-2]  # no change in the last step: no forgetting at all
    assert np.all(forgetting_per_experience(flat) == 0.0)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), unit, unit)
def test_constant_matrix(t, c, b):
    r = np.full((t, t), c)
    assert average_accuracy(r) == pytest.approx(c)
    assert learning_accuracy(r) == pytest.approx(c)
    if t > 1:
        assert backward_transfer(r) == 0.0
        assert forgetting(r) == 0.0
        assert forward_transfer(r, np.full(t, b)) == pytest.approx(c - b)


@settings(max_examples=100, deadline=None)
@given(matrices(min_t=2))
def test_forward_transfer_against_itself_is_zero(r):
    b = np.concatenate([[0.5], np.diag(r, k=1)])
    assert forward_transfer(r, b) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(matrices(min_t=2))
def test_upper_triangle_only_affects_fwt_and_forgetting_max(r):
    # ACC, BWT and LA read only the last row and the diagonal
    other = np.tril(r)
    other[-1] = r[-1]
    assert average_accuracy(other) == average_accuracy(r)
    assert backward_transfer(other) == backward_transfer(r)
    assert learning_accuracy(other) == learning_accuracy(r)


@settings(max_examples=100, deadline=None)
@given(matrices(min_t=2))
def test_perfect_final_row_means_no_forgetting(r):
    r = r.copy()
    r[-1] = 1.0
    assert average_accuracy(r) == 1.0
    assert forgetting(r) <= 1e-12
    assert backward_transfer(r) >= -1e-12


def test_inputs_not_mutated_and_lists_accepted():
    r = R3.copy()
    summary(r, B3)
    np.testing.assert_array_equal(r, R3)
    assert average_accuracy(R3.tolist()) == average_accuracy(R3)
