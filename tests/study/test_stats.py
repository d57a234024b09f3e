"""The step rule and the computed wording, on numbers checkable by hand."""

import math

from featcache.study.stats import compare, effect_sentence, seed_stats
from featcache.study.tables import ablation_markdown, findings, steps


def test_seed_stats_uses_sample_std():
    s = seed_stats([0.5, 0.7, 0.6])
    assert s.n == 3 and math.isclose(s.mean, 0.6) and math.isclose(s.std, 0.1)
    one = seed_stats([0.4])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.std)


def test_step_counts_only_beyond_pooled_std():
    base = seed_stats([0.50, 0.60, 0.70])  # std 0.1
    small = compare(seed_stats([0.55, 0.65, 0.75]), base)  # Δ 0.05, pooled 0.1
    assert math.isclose(small.delta, 0.05) and math.isclose(small.pooled_std, 0.1)
    assert small.exceeds is False and small.verdict == "no"
    big = compare(seed_stats([0.80, 0.82, 0.84]), base)  # Δ 0.22, pooled sqrt((0.0004+0.01)/2)
    assert big.exceeds is True
    assert math.isclose(big.pooled_std, math.sqrt((0.02 ** 2 + 0.1 ** 2) / 2))
    assert compare(seed_stats([0.9]), base).exceeds is None


def test_wording_follows_the_numbers():
    base = seed_stats([0.50, 0.60, 0.70])
    assert "no measurable effect" in effect_sentence("x", compare(seed_stats([0.55, 0.65, 0.75]), base))
    assert "it hurts" in effect_sentence("x", compare(seed_stats([0.20, 0.22, 0.24]), base))
    assert "it helps" in effect_sentence("x", compare(seed_stats([0.90, 0.92, 0.94]), base))
    assert "no conclusion" in effect_sentence("x", compare(seed_stats([0.9]), seed_stats([0.1])))


def _rows(values: dict[int, list[float]]) -> list[dict]:
    return [{"config": k, "regime": "full", "seed": s, "dice_mean": v, "hd95_mean": 3.0, "hd95_unit": "mm",
             "params": 1000, "train_seconds": 10.0, "gate_real": 0.6, "gate_uninformative": 0.4}
            for k, vs in values.items() for s, v in enumerate(vs)]


def test_table_states_rule_and_computes_verdicts():
    rows = _rows({1: [0.50, 0.60, 0.70], 2: [0.52, 0.62, 0.72], 5: [0.90, 0.91, 0.92],
                  6: [0.40, 0.50, 0.60]})
    st = steps(rows)
    assert set(st) == {("full", 2), ("full", 6)}  # k vs k-1 where both ran (not 5 vs 2)
    assert st[("full", 2)].exceeds is False
    text = ablation_markdown(rows, {1: "alone", 2: "distil", 5: "full", 6: "uninf"}, ["a note"],
                             ["real", "uninformative"])
    assert "|Δ mean Dice| > pooled std" in text and "a note" in text
    found = "\n".join(findings(rows))
    assert "distillation from the real teacher (2 vs 1)" in found and "no measurable effect" in found
    assert "5 vs 1): Δ mean Dice +0.3100 exceeds the seed spread" in found and "it helps" in found
    assert "gate: real teacher" in text and "0.600 ± 0.000" in text


def test_table_flags_runs_that_never_improved():
    rows = _rows({1: [0.5, 0.6], 2: [0.5, 0.6]})
    rows[0]["best_epoch"] = 1
    text = ablation_markdown(rows, {1: "alone", 2: "distil"}, [], ["real", "uninformative"])
    assert "1 of 4 runs kept their epoch-1 checkpoint" in text
