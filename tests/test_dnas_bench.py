"""bench/dnas_quality.py's yardsticks: random search's best of N and the collapse count."""
from __future__ import annotations

from bench.dnas_quality import parameter_free, random_best_of
from supernet.nb201 import KEYS


def test_random_best_of_matches_the_order_statistic() -> None:
    """The best of 100 distinct draws from 1,000 evenly spaced values has mean 1000 * 100 / 101 - 1 (in 0..999)."""
    table = {str(i): (i / 1000, 1) for i in range(1000)}
    mean, std = random_best_of(table, picks=100, trials=2000, seed=1)
    expected = (1000 * 100 / 101 - 1) / 1000
    assert abs(mean - expected) < 0.003 and 0 < std < 0.02
    assert random_best_of(table, picks=1000, trials=3)[0] == 0.999  # every value drawn: the best is the best


def test_parameter_free_counts_zero_skip_and_pool_edges() -> None:
    ops = ["none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3", "none"]
    assert parameter_free(dict(zip(KEYS, ops))) == 4
