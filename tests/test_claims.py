import pytest

from advnb import claims, core


def test_record_replaces_by_id_and_keeps_others(tmp_path):
    core.start_run("nb", scale="smoke", seed=0, reports_dir=tmp_path)
    claims.record("X-1", "A", "3.1", "s", "paper", {"ours": 1}, True)
    claims.record("X-2", "A", "3.2", "s", "paper", 0.5, None)
    claims.record("X-1", "A", "3.1", "s", "paper", {"ours": 2}, False)
    df = claims.load_claims("smoke", tmp_path)
    assert sorted(df["id"]) == ["X-1", "X-2"]
    row = df.set_index("id").loc["X-1"]
    assert row["our_value"] == {"ours": 2}
    assert row["holds"] == False and row["holds"] is not None  # noqa: E712 (a numpy/pandas bool compares, `is` does not)
    t = claims.claims_table("smoke", tmp_path)
    assert list(t["verdict"]) == ["does not hold", "inconclusive"]
    core._current_run = None


def test_holds_must_be_boolean_or_none(tmp_path):
    core.start_run("nb", scale="smoke", seed=0, reports_dir=tmp_path)
    with pytest.raises(TypeError, match="holds must be"):
        claims.record("X-3", "A", "3", "s", "p", 1, "yes")
    core._current_run = None


def test_exceeds_and_all_hold_follow_the_one_noise_rule():
    assert claims.exceeds(0.3, 0.1) is True and claims.exceeds(0.15, 0.1) is None
    # symmetric: the wrong sign decides only beyond noise too
    assert claims.exceeds(-0.01, 0.1) is None and claims.exceeds(-0.3, 0.1) is False
    assert claims.exceeds(float("nan"), 0.1) is None and claims.exceeds(0.5, float("nan")) is None
    # SE 0 (no noise to estimate): the sign decides, except within floating-point rounding of the bound
    assert claims.exceeds(1e-9, 0.0) is True and claims.exceeds(-1e-9, 0.0) is False
    assert claims.exceeds(-0.9 - (-0.8999999999999998), 0.0) is None and claims.exceeds(0.0, 0.0) is None
    assert claims.all_hold([True, True]) is True
    assert claims.all_hold([True, None, True]) is None
    assert claims.all_hold([None, False, True]) is False
    assert claims.all_hold(v for v in [True]) is True  # a generator works too
    assert claims.all_hold([]) is None  # nothing measured is not a success


@pytest.mark.parametrize("se", [0.01, 0.2, 3.0])
def test_half_a_standard_error_is_inconclusive_and_three_decide(se):
    assert claims.exceeds(0.5 * se, se) is None and claims.exceeds(-0.5 * se, se) is None
    assert claims.exceeds(3 * se, se) is True and claims.exceeds(-3 * se, se) is False
    verdict, evidence = claims.compare(3 * se, se, "binomial")
    assert verdict is True and evidence == {"d": round(3 * se, 4), "se": round(se, 4), "se_method": "binomial"}
    assert claims.RULE in claims.criterion_text("acc(a) - acc(b)", "binomial")


def test_bootstrap_se_of_a_mean_is_sd_over_root_n_and_resamples_rows_together():
    import numpy as np
    d = np.random.default_rng(1).normal(0.0, 2.0, 500)
    se = claims.bootstrap_se(np.mean, d, n_boot=2000)
    assert se == pytest.approx(d.std(ddof=1) / 500 ** 0.5, rel=0.1)
    assert claims.bootstrap_se(np.mean, d, seed=3) == claims.bootstrap_se(np.mean, d, seed=3)  # seeded
    # paired: the difference of a column with itself never varies, whatever rows are drawn
    assert claims.bootstrap_se(lambda a, b: a.mean() - b.mean(), d, d.copy()) == 0.0
    # but two independent columns do
    assert claims.bootstrap_se(lambda a, b: a.mean() - b.mean(), d, d[::-1].copy()) > 0.05
    assert np.isnan(claims.bootstrap_se(lambda a: float("nan"), d, n_boot=5))
    with pytest.raises(ValueError, match="one length"):
        claims.bootstrap_se(lambda a, b: 0.0, d, d[:10])


def test_bootstrap_se_groups_resamples_each_group_on_its_own():
    import numpy as np
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.0, 2.0, 400), rng.normal(1.0, 1.0, 100)
    diff = lambda x, y: x.mean() - y.mean()  # noqa: E731
    se = claims.bootstrap_se_groups(diff, (a,), (b,), n_boot=2000)
    assert se == pytest.approx(claims.mean_difference(a, b)[1], rel=0.1)  # the unpaired SE of a difference of means
    # rows of one group stay together: a column against itself within a group never varies
    assert claims.bootstrap_se_groups(lambda x, y, z: diff(x, y), (a, a.copy()), (b,)) == 0.0
    # one group is the paired bootstrap, draw for draw
    assert claims.bootstrap_se_groups(np.mean, (a,), seed=4) == claims.bootstrap_se(np.mean, a, seed=4)
    with pytest.raises(ValueError, match="one length"):
        claims.bootstrap_se_groups(diff, (a, a[:5]), (b,))


def test_mean_difference_is_the_unpaired_standard_error():
    import numpy as np
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 5.0])
    d, se = claims.mean_difference(a, b)
    assert d == pytest.approx(2.5 - 2.0)
    assert se == pytest.approx((a.var(ddof=1) / 4 + b.var(ddof=1) / 3) ** 0.5)
    assert claims.mean_difference([1.0], [2.0, 3.0])[1] == float("inf")  # one value: no spread, no verdict


def test_a_notebooks_recorder_fills_its_fields_once_and_a_call_overrides_them(tmp_path):
    core.start_run("f1_demo", scale="smoke", seed=0, reports_dir=tmp_path)
    claim = claims.claim_recorder("F", dataset="fashionmnist", notes="quick subset")
    claim("F.1.a", section="1", statement="s", paper_value=1, our_value=2, holds=True)
    claim("F.1.b", section="1", statement="s", paper_value=1, our_value=2, holds=None, dataset="mnist")
    rows = claims.load_claims("smoke", tmp_path).set_index("id")
    assert rows.loc["F.1.a", ["paper", "dataset", "notes"]].tolist() == ["F", "fashionmnist", "quick subset"]
    assert rows.loc["F.1.b", ["paper", "dataset"]].tolist() == ["F", "mnist"]
    core._current_run = None


def test_the_se_of_a_mean_of_accuracy_differences_adds_their_variances():
    se = claims.accuracy_difference_se
    assert claims.mean_accuracy_difference_se([(0.5, 100, 0.5)]) == pytest.approx(se(0.5, 100, 0.5))
    pairs = [(0.8, 100, 0.6), (0.3, 20, 0.1)]
    assert claims.mean_accuracy_difference_se(pairs) == pytest.approx((se(0.8, 100, 0.6) ** 2 + se(0.3, 20, 0.1) ** 2) ** 0.5 / 2)


def test_above_chance_by_the_one_rule():
    from advnb.claims import above_chance
    assert above_chance(0.100, 10000, 10) is None  # at chance: nothing learned
    assert above_chance(0.81, 10000, 10) is True
    assert above_chance(0.05, 10000, 10) is False  # below chance beyond noise
    assert above_chance(0.16, 100, 10) is None  # 0.06 above with an SE of 0.037: within noise
    assert above_chance(0.2, 100, 10) is True  # 0.10 above, SE 0.04
    assert above_chance(0.5, 0, 2) is None


def test_accuracy_difference_se_takes_each_accuracy_at_its_own_sample_size():
    # √(0.25/100 + 0.25/25) = √0.0125: the second accuracy measured on a quarter of the images
    assert claims.accuracy_difference_se(0.5, 100, 0.5, 25) == pytest.approx(0.0125 ** 0.5)


def test_paired_difference_by_hand():
    # d = 0, 1, 2, 3: mean 1.5, sample variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3, SE √(5/3) / 2
    assert claims.paired_difference([0.0, 1.0, 2.0, 3.0]) == pytest.approx((1.5, (5 / 3) ** 0.5 / 2))


def test_bootstrap_se_matches_the_exact_bootstrap_distribution_on_three_points():
    import itertools
    import numpy as np
    x = np.array([0.0, 1.0, 5.0])
    exact = np.array([x[list(i)].mean() for i in itertools.product(range(3), repeat=3)]).std()  # all 27 resamples
    assert claims.bootstrap_se(np.mean, x, n_boot=20000) == pytest.approx(exact, rel=0.03)
    # two independent groups of the same points: each resampled on its own, so the SE of the difference is √2 × exact
    diff = lambda a, b: a.mean() - b.mean()  # noqa: E731
    assert claims.bootstrap_se_groups(diff, (x,), (x.copy(),), n_boot=20000) == pytest.approx(2 ** 0.5 * exact, rel=0.03)


def test_combined_verdict_on_every_combination_of_three_seeds():
    import itertools
    for vs in itertools.product([True, False, None], repeat=3):
        expected = ("holds in every seed" if all(v is True for v in vs) else
                    "holds in none" if True not in vs else "mixed")  # inconclusive seeds do not hold
        assert claims.combined_verdict(vs) == expected, vs
