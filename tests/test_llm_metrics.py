"""Pure LLM-unlearning metrics on hand-computed values (no model, no transformers)."""

from __future__ import annotations

import math
import zlib

import pytest

pytest.importorskip("rouge_score")
pytest.importorskip("transformers")

from obliviate.errors import ObliviateError  # noqa: E402
from obliviate.llm import metrics as M  # noqa: E402


def test_truth_ratio_is_geometric_mean_of_perturbed_over_paraphrased() -> None:
    # exp(-mean(2, 4)) / exp(-1) = exp(-2)
    tr = M.truth_ratio([1.0, 0.5], [[2.0, 4.0], [0.5, 0.5]])
    assert tr[0] == pytest.approx(math.exp(-2.0), rel=1e-9)
    assert tr[1] == pytest.approx(1.0, rel=1e-9)


def test_truth_ratio_aggregations() -> None:
    assert M.closer_to_1_better([0.5, 2.0]) == pytest.approx(0.5, rel=1e-8)
    assert M.true_better([0.5, 2.0]) == pytest.approx(0.25)
    assert M.true_better([1.5]) == 0.0


def test_forget_quality_is_the_ks_p_value() -> None:
    # fully separated samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1
    assert M.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert M.forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(ObliviateError):
        M.forget_quality([], [1.0])


def test_min_k_and_min_k_plus_plus() -> None:
    # lowest 40 % of 5 tokens = 2 tokens: -5, -4 -> score 4.5
    assert M.min_k([-1.0, -2.0, -3.0, -4.0, -5.0], 0.4) == pytest.approx(4.5)
    assert M.min_k([-1.0, -2.0], 0.1) == pytest.approx(2.0)  # at least one token
    # z = (-1 - -2) / 1 = 1, (-3 - -2) / 2 = -0.5; lowest half = -0.5 -> 0.5
    assert M.min_k_plus_plus([-1.0, -3.0], [-2.0, -2.0], [1.0, 2.0], 0.5) == pytest.approx(0.5)


def test_rouge_l_recall() -> None:
    assert M.rouge_l_recall("the cat sat", "the cat sat on the mat") == pytest.approx(0.5)
    assert M.rouge_l_recall("Ann was born in Oslo .", "Ann was born in Oslo.") == 1.0
    assert M.rouge_l_recall("nothing alike", "Ann was born in Oslo.") == 0.0


def test_extraction_strength_and_exact_memorization() -> None:
    assert M.extraction_strength([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert M.extraction_strength([9, 2, 3, 4], [1, 2, 3, 4]) == 0.75
    assert M.extraction_strength([1, 2, 3, 9], [1, 2, 3, 4]) == 0.25  # OpenUnlearning's 1/n
    assert M.exact_memorization([1, 0, 3, 0], [1, 2, 3, 4]) == 0.5


def test_mia_auc_privleak_utility_zlib() -> None:
    assert M.mia_auc([0.1, 0.2], [0.3, 0.4]) == 1.0  # members have the lower loss
    assert M.mia_auc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert M.mia_auc([0.1, 0.4], [0.2, 0.3]) == 0.5
    assert M.privleak(0.75, 0.5) == pytest.approx(50.0)
    assert M.model_utility([0.5, 1.0]) == pytest.approx(2 / 3)
    assert M.model_utility([0.5, 0.0]) == 0.0
    assert M.zlib_score(2.0, "aaaa") == pytest.approx(2.0 / len(zlib.compress(b"aaaa")))
