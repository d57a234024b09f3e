"""Paired differences and the computed wording, on numbers checkable by hand."""

import math

from featcache.study.stats import paired_difference, seed_stats
from featcache.study.tables import ablation_markdown, findings


def test_seed_stats_uses_sample_std():
    s = seed_stats([0.5, 0.7, 0.6])
    assert s.n == 3 and math.isclose(s.mean, 0.6) and math.isclose(s.std, 0.1)
    one = seed_stats([0.4])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.std)


def test_paired_difference_is_a_t_interval_over_common_seeds():
    a = {0: 0.60, 1: 0.70, 2: 0.80, 3: 0.99}
    b = {0: 0.50, 1: 0.62, 2: 0.68}  # seed 3 has no partner: left out
    d = paired_difference(a, b)
    # differences 0.10, 0.08, 0.12: mean 0.10, sd 0.02, t(0.975, 2) = 4.3027
    assert d.n == 3 and math.isclose(d.mean, 0.10)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert math.isclose(d.low, 0.10 - half, rel_tol=1e-6) and math.isclose(d.high, 0.10 + half, rel_tol=1e-6)
    assert d.verdict == "better" and d.text() == "+0.100 [+0.050, +0.150]"
    assert paired_difference(b, a).verdict == "worse"
    assert paired_difference({0: 0.5, 1: 0.7}, {0: 0.6, 1: 0.5}).verdict == "not established"
    single = paired_difference({0: 0.9}, {0: 0.1})
    assert single.verdict == "n/a" and single.text() == "+0.800"


def _rows(values: dict[int, list[float]], test: str = "axial", fraction: float = 1.0) -> list[dict]:
    return [{"arm": k, "label_fraction": fraction, "test": test, "test_title": f"{test} test", "seed": s,
             "dice_mean": v, "hd95_mean": 3.0, "hd95_unit": "mm", "params": 1000, "train_seconds": 10.0,
             "gate_real": 0.6, "gate_uninformative": 0.4, "run_dir": f"a{k}-s{s}-f{fraction}",
             "best_epoch": 3, "compared_to": k - 1 if k > 1 else None}
            for k, vs in values.items() for s, v in enumerate(vs)]


def test_table_pairs_by_seed_and_computes_verdicts():
    # Arm 5 beats 2 by exactly +0.1 on every seed although the seeds spread widely.
    rows = _rows({1: [0.50, 0.60, 0.70], 2: [0.40, 0.60, 0.80], 5: [0.50, 0.70, 0.90],
                  6: [0.40, 0.60, 0.80]})
    names = {1: "alone random", 2: "alone pretrained", 5: "full", 6: "pretrain"}
    text = ablation_markdown(rows, names, ["a note"], ["real", "uninformative"], reference=2)
    assert "95% confidence interval" in text and "a note" in text
    assert "| 5 | full | full labels, axial test | 0.7000 ± 0.2000 |" in text
    assert "+0.100 [+0.100, +0.100]" in text  # the paired interval, not the spread of either arm
    found = "\n".join(findings(rows, names, reference=2))
    assert "5 (full) vs 2: Δ Dice +0.100 [+0.100, +0.100], n=3: better" in found
    assert "6 (pretrain) vs 2: Δ Dice +0.000" in found  # the last arm is always reported
    assert "gate: real" in text and "0.600 ± 0.000" in text


def test_paired_interval_in_the_table_checked_by_hand():
    # Reference arm 1 and arm 2 on three seeds, in the 10% regime: differences 0.05, 0.02, 0.08
    # -> mean 0.05, sample sd 0.03, half-width t(0.975, 2) * 0.03 / sqrt(3) = 4.3027 * 0.017321
    # = 0.0745: [-0.0245, +0.1245], which includes zero. Arm 2 alone: mean 0.65, sample sd
    # sqrt((0.1^2 + 0.03^2 + 0.13^2) / 2) = 0.1179.
    rows = _rows({1: [0.50, 0.60, 0.70], 2: [0.55, 0.62, 0.78]}, test="demo", fraction=0.1)
    text = ablation_markdown(rows, {1: "alone", 2: "distilled"}, [], [], reference=1)
    line = next(x for x in text.splitlines() if x.startswith("| 2 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:4] == ["2", "distilled", "10% labels, demo test", "0.6500 ± 0.1179"]
    assert cells[6] == "+0.050 [-0.025, +0.125]" and cells[7] == "+0.050 [-0.025, +0.125]"
    assert "2 (distilled) vs 1: Δ Dice +0.050 [-0.025, +0.125], n=3: not established" in text
    reference = next(x for x in text.splitlines() if x.startswith("| 1 |"))
    assert reference.rstrip().endswith("| – | – |")  # the reference has nothing to pair against


def test_table_flags_runs_that_never_improved():
    rows = _rows({1: [0.5, 0.6], 2: [0.5, 0.6]})
    rows[0]["best_epoch"] = 1
    text = ablation_markdown(rows, {1: "alone", 2: "distil"}, [], ["real", "uninformative"], reference=1)
    assert "1 of 4 runs kept their epoch-1 checkpoint" in text


def test_plot_has_a_panel_per_setting(tmp_path):
    from featcache.study.plots import ablation_plot

    rows = _rows({1: [0.5, 0.6], 2: [0.55, 0.62]})
    rows += _rows({1: [0.3, 0.4], 2: [0.35, 0.5]}, test="orientation")
    path = ablation_plot(rows, {1: "alone", 2: "pretrained"}, tmp_path / "a.png")
    assert path.stat().st_size > 10_000
