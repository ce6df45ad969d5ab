"""Evals you can trust: intervals over problems, paired comparisons, a deterministic dev/test
split, random routing at a recorded run's share, and the commands that use them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from glimprouter.cli import main
from glimprouter.errors import ConfigError
from glimprouter.evals import stats
from glimprouter.evals.datasets import Problem, load_problems, split_problems
from glimprouter.evals.report import load_rows, markdown, paired_markdown, verdict
from glimprouter.evals.results import (
    realised_large_share,
    results_dirs,
)
from glimprouter.graph.context import RouterContext
from tests.fakes import fake_model_server
from tests.paths import SHARED_DATA
from tests.runs import write_run

DATA_DIR = SHARED_DATA


def simulated(p: float, problems: int, repeats: int, rng) -> dict[str, list[bool]]:
    """Problems of varying difficulty around a planted accuracy `p`, repeats kept per problem."""
    difficulty = np.clip(rng.normal(p, 0.15, problems), 0, 1)
    return {str(i): list(rng.random(repeats) < d) for i, d in enumerate(difficulty)}


@pytest.mark.parametrize(("repeats", "p"), [(1, 0.3), (1, 0.8), (3, 0.5)])
def test_accuracy_intervals_cover_the_planted_accuracy_at_about_the_nominal_rate(repeats, p):
    rng = np.random.default_rng(repeats)
    trials, problems = 150, 40
    covered, widths = 0, []
    for seed in range(trials):
        outcomes = simulated(p, problems, repeats, rng)
        # What the set's problems would score with endless repeats: the truth for this draw.
        estimate = stats.accuracy(outcomes, seed=seed)
        covered += estimate.low <= p <= estimate.high
        widths.append(estimate.high - estimate.low)
    # Near 95% but not always: an interval wide enough to hold every p would cover 100%.
    assert 0.88 <= covered / trials <= 0.99, covered / trials
    # And no wider than a quarter above the normal approximation's for one repeat a problem.
    normal_width = 2 * 1.96 * np.sqrt(p * (1 - p) / problems)
    assert np.mean(widths) <= 1.25 * normal_width, (np.mean(widths), normal_width)


def test_one_repeat_gives_wilsons_interval():
    outcomes = {str(i): [i < 3] for i in range(10)}
    estimate = stats.accuracy(outcomes)
    wilson = scipy_stats.binomtest(3, 10).proportion_ci(method="wilson")
    assert (estimate.value, estimate.low, estimate.high) == pytest.approx(
        (0.3, wilson.low, wilson.high)
    )


def test_mcnemar_exact_matches_the_table_value():
    # 8 problems only the method got right, 2 only the reference: exact two-sided p = 0.1094.
    assert stats.mcnemar_exact(8, 2) == pytest.approx(0.109375)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(10, 0) == pytest.approx(2 * 0.5**10)


def test_a_real_difference_is_told_apart_and_an_equal_pair_is_not():
    better = {str(i): [(True, 5.0)] for i in range(40)}
    worse = {str(i): [(i % 2 == 0, 10.0 + i % 3)] for i in range(40)}
    comparison = stats.paired(better, worse)
    assert comparison.problems == 40 and comparison.accuracy_test == "McNemar exact"
    assert comparison.distinguishable and comparison.accuracy_p < 0.001
    assert comparison.latency_ratio.high < 1 and comparison.latency_p < 0.01
    assert verdict(comparison) == "more accurate; faster"
    same = stats.paired(worse, worse)
    assert not same.distinguishable and same.accuracy_p == 1.0
    assert verdict(same) == "accuracy not distinguishable; latency not distinguishable"


def test_with_repeats_the_accuracy_p_is_the_exact_sign_flip_p():
    """Three repeats a problem: the accuracy p-value is the paired sign-flip test's, here over
    all 2^10 flips of the per-problem differences, enumerated."""
    ours, theirs = [3, 3, 2, 3, 1, 2, 3, 0, 3, 3], [1, 2, 2, 0, 2, 1, 2, 1, 3, 1]
    method = {str(i): [(r < n, 1.0) for r in range(3)] for i, n in enumerate(ours)}
    reference = {str(i): [(r < n, 2.0) for r in range(3)] for i, n in enumerate(theirs)}
    comparison = stats.paired(method, reference)
    differences = (np.array(ours) - np.array(theirs)) / 3
    observed = abs(differences.mean())
    flips = itertools.product((1, -1), repeat=len(differences))
    as_extreme = sum(abs((np.array(f) * differences).mean()) >= observed - 1e-12 for f in flips)
    assert comparison.accuracy_test == "sign-flip permutation"
    assert comparison.accuracy_p == pytest.approx(as_extreme / 2 ** len(differences))
    assert comparison.accuracy_difference.value == pytest.approx(differences.mean())


def test_pairs_use_only_the_problems_both_ran():
    method = {"a": [(True, 1.0)], "b": [(True, 1.0)], "c": [(False, 1.0)]}
    reference = {"b": [(False, 2.0)], "c": [(False, 2.0)], "d": [(True, 2.0)]}
    assert stats.paired(method, reference).problems == 2
    with pytest.raises(ValueError):
        stats.paired({"a": [(True, 1.0)]}, {"b": [(True, 1.0)]})


def test_the_split_is_deterministic_disjoint_and_covers_the_dataset():
    problems = load_problems("math500", data_dir=DATA_DIR)
    dev = split_problems(problems, "dev", 0.2, seed=0)
    test = split_problems(problems, "test", 0.2, seed=0)
    ids = lambda part: [p.id for p in part]  # noqa: E731
    assert set(ids(dev)).isdisjoint(ids(test))
    assert sorted(ids(dev) + ids(test)) == sorted(ids(problems))
    assert 0.15 < len(dev) / len(problems) < 0.25
    assert ids(split_problems(list(reversed(problems)), "dev", 0.2, 0)) == ids(dev)[::-1]
    assert ids(split_problems(problems[:50], "dev", 0.2, 0)) == [
        p.id for p in dev if p in problems[:50]
    ]
    assert ids(split_problems(problems, "dev", 0.2, seed=1)) != ids(dev)
    with pytest.raises(ConfigError, match="--dev-fraction"):
        split_problems(problems, "dev", 1.5)


def record(problem_id, correct, *, steps=4, large_steps=1, latency=10.0, dataset="math500"):
    return {
        "dataset": dataset,
        "problem_id": problem_id,
        "repeat": 0,
        "correct": correct,
        "latency_s": latency,
        "steps": steps,
        "large_steps": large_steps,
        "small_completion_tokens": 100,
        "large_completion_tokens": 50 * large_steps,
        "small_requests": 4,
        "large_requests": large_steps + 1,
        "trace": [],
    }


def test_the_matched_rate_is_the_recorded_large_step_share(tmp_path):
    write_run(
        tmp_path / "glimp",
        RouterContext(),
        [record("a", True, steps=4, large_steps=1), record("b", True, steps=6, large_steps=4)]
        + [record("x", True, steps=10, large_steps=10, dataset="aime24")],
    )
    assert realised_large_share([tmp_path / "glimp"], "math500") == pytest.approx(5 / 10)
    with pytest.raises(ConfigError, match="match:DIR"):
        realised_large_share([tmp_path / "glimp"], "gpqa_diamond")


def test_report_rows_carry_intervals_and_refuse_mixed_splits(tmp_path):
    write_run(tmp_path / "large", RouterContext(method="large-only"),
              [record(str(i), i % 4 != 0, large_steps=4) for i in range(20)])  # fmt: skip
    write_run(tmp_path / "glimp", RouterContext(threshold=1.0),
              [record(str(i), i % 4 != 1, latency=6.0) for i in range(20)])  # fmt: skip
    rows = load_rows(results_dirs([tmp_path]))
    table = markdown(rows)
    assert "| glimprouter t=1 | 20 | 75.0% [53.1, 88.8] |" in table, table
    paired = paired_markdown(rows, "large-only")
    assert "### math500: against large-only" in paired
    assert "| glimprouter t=1 | 20 | +0.0 [" in paired and "accuracy not distinguishable" in paired
    assert "0.60x [0.60, 0.60]" in paired and "faster" in paired
    with pytest.raises(ConfigError, match="names no run here"):
        paired_markdown(rows, "specreason")

    write_run(tmp_path / "dev", RouterContext(method="small-only"), [record("1", True)],
              selection={"split": "dev", "dev_fraction": 0.2, "split_seed": 0})  # fmt: skip
    with pytest.raises(ConfigError, match="mix splits of math500"):
        load_rows(results_dirs([tmp_path]))


SMALL_BUDGETS = ["--step-max-tokens", "16", "--token-budget", "64", "--answer-max-tokens", "16"]


def problems_file(directory: Path, count: int) -> Path:
    """A data file of `count` arithmetic problems (the fake model answers 4 to each)."""
    data = directory / "problems.jsonl"
    lines = (json.dumps({"problem": f"What is {n} + 1?", "answer": "4"}) for n in range(count))
    data.write_text("".join(line + "\n" for line in lines))
    return data


def test_eval_split_and_matched_random_then_report_against(tmp_path, capsys):
    data = problems_file(tmp_path, 12)
    with fake_model_server() as server:
        endpoints = ["--small-url", server.url, "--large-url", server.url, *SMALL_BUDGETS]
        glimp, rand = tmp_path / "glimp", tmp_path / "random"
        common = ["--data-file", str(data), "--split", "test", *endpoints]
        assert main(["eval", *common, "--output", str(glimp)]) == 0
        assert main(["eval", *common, "--method", "random", "--large-rate", f"match:{glimp}",
                     "--output", str(rand)]) == 0  # fmt: skip
        capsys.readouterr()
        assert main(["report", str(glimp), str(rand), "--against", "random"]) == 0
    printed = capsys.readouterr().out
    config = json.loads((rand / "config.json").read_text())
    # The fake's chains: three steps, the last two by the large model.
    assert config["large_rate"] == pytest.approx(2 / 3)
    assert config["large_rate_matched_from"] == str(glimp)
    assert config["split"] == "test" and json.loads((glimp / "config.json").read_text())["split"]
    test_ids = {p.id for p in split_problems(load_problems(data_file=data), "test")}
    recorded = [json.loads(line)["problem_id"] for line in (glimp / "results.jsonl").open()]
    assert set(recorded) == test_ids
    assert "### problems (test split)" in printed
    assert "### problems: against random p=0.667" in printed
    assert "### problems: glimprouter t=1 against random at its large share" in printed


def test_a_calibrated_sweep_runs_dev_then_test_at_the_chosen_thresholds(tmp_path, capsys):
    data = problems_file(tmp_path, 20)
    with fake_model_server() as server:
        status = main(["sweep", "--data-file", str(data), "--calibrate-on-dev",
                       "--target-large-shares", "0.3,0.6", "--dev-fraction", "0.3",
                       "--output", str(tmp_path / "sweep"), "--small-url", server.url,
                       "--large-url", server.url, *SMALL_BUDGETS])  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    runs = results_dirs([tmp_path / "sweep"])
    configs = [json.loads((run / "config.json").read_text()) for run in runs]
    assert sorted(c["target_large_share"] for c in configs) == [0.3, 0.6]
    assert {c["split"] for c in configs} == {"test"}
    # The fake's glimpse entropies are ln 2, ln 3 and ln 4 in every chain: a third each.
    thresholds = sorted(c["threshold"] for c in configs)
    assert thresholds == pytest.approx([np.log(3), np.log(4)])
    assert "target large share 30.0%" in out and "glimprouter report" in out
    dev = json.loads(next((tmp_path / "sweep" / "dev").glob("*/config.json")).read_text())
    assert dev["split"] == "dev"
    with pytest.raises(ConfigError, match="--target-large-shares"):
        from glimprouter.cli import build_parser

        args = build_parser().parse_args(
            ["sweep", "--data-file", str(data), "--calibrate-on-dev", "--output", "x"]
        )
        args.handler(args)


def test_problems_split_by_id_within_a_dataset():
    a = Problem("d", "1", "q", "math", "1")
    assert split_problems([a], "dev", 0.5, 0) + split_problems([a], "test", 0.5, 0) == [a]
