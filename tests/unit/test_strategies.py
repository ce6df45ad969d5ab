"""Routing strategies and the scores they use, as pure functions."""

import asyncio
import math

import pytest

from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.prompts import judge_messages
from glimprouter.scoring import judge_score, mean_token_entropy, perplexity
from glimprouter.strategies import BUILT_INS, STRATEGIES, StepView, get_strategy


def top(*probabilities):
    return [
        {"token": f"t{i}", "logprob": math.log(p), "bytes": [i]}
        for i, p in enumerate(probabilities)
    ]


def view(entropy=None, key="k", judged=None, **context):
    async def judge(draft):
        return judged

    return StepView(0, entropy, None, [], RouterContext(**context), None, key, judge)


def decide(name, entropy=None, key="k", **context):
    return get_strategy(name).decide(view(entropy, key, **context))


def review(name, score, judged=None, **context):
    draft = {"text": "a draft", "score": score}
    return asyncio.run(get_strategy(name).review(view(judged=judged, **context), draft))


def test_registry_holds_the_method_and_its_baselines():
    assert {cls.name for cls in BUILT_INS} <= set(STRATEGIES)
    assert {cls.name for cls in BUILT_INS} == {
        "glimprouter",
        "small-only",
        "large-only",
        "random",
        "step-entropy",
        "step-ppl",
        "specreason",
    }


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"valid methods: \[.*'specreason'.*GLIMPROUTER_METHOD"):
        get_strategy("bert-router")
    with pytest.raises(ConfigError, match="unknown method"):
        RouterContext(method="nope")


def test_fixed_strategies():
    assert decide("small-only", 3.0, threshold=0.0, large_rate=1.0) == "small"
    assert decide("large-only", 0.0, threshold=9.0, large_rate=0.0) == "large"
    assert decide("glimprouter", 1.0, threshold=1.0) == "large"
    assert decide("glimprouter", 0.99, threshold=1.0) == "small"


def test_random_is_seeded_per_key_and_matches_its_rate():
    picks = [decide("random", key=f"0|q|{i}", large_rate=0.3) for i in range(4000)]
    assert picks == [decide("random", key=f"0|q|{i}", large_rate=0.3) for i in range(4000)]
    assert picks.count("large") / len(picks) == pytest.approx(0.3, abs=0.03)
    assert {decide("random", key=str(i), large_rate=0.0) for i in range(50)} == {"small"}
    assert {decide("random", key=str(i), large_rate=1.0) for i in range(50)} == {"large"}


def test_large_rate_must_be_a_probability():
    with pytest.raises(ConfigError, match="large_rate"):
        RouterContext(large_rate=1.5)


def test_reviewing_strategies_draft_with_the_small_model():
    for name in ("step-entropy", "step-ppl", "specreason"):
        assert decide(name, threshold=1.0, large_rate=1.0) == "small"
        assert get_strategy(name).drafts()


def test_step_entropy_is_the_mean_token_entropy():
    tokens = [
        {"token": "a", "logprob": math.log(0.5), "top_logprobs": top(0.5, 0.5)},
        {"token": "b", "logprob": 0.0, "top_logprobs": top(1.0)},
    ]
    assert mean_token_entropy([t["top_logprobs"] for t in tokens]) == pytest.approx(math.log(2) / 2)
    strategy = get_strategy("step-entropy")
    assert strategy.score_draft(tokens) == pytest.approx(math.log(2) / 2)
    assert review("step-entropy", 0.5, threshold=0.5) == "large"
    assert review("step-entropy", 0.49, threshold=0.5) == "keep"
    assert review("step-entropy", None, threshold=0.0) == "keep"  # nothing to score: kept


def test_step_perplexity():
    assert perplexity([math.log(0.5), math.log(0.5)]) == pytest.approx(2.0)
    tokens = [{"token": "a", "logprob": math.log(0.25), "top_logprobs": []}]
    assert get_strategy("step-ppl").score_draft(tokens) == pytest.approx(4.0)


def test_specreason_judge_score_is_the_expected_digit():
    candidates = [
        {"token": "9", "logprob": math.log(0.6), "bytes": None},
        {"token": "7", "logprob": math.log(0.2), "bytes": None},
        {"token": "The", "logprob": math.log(0.2), "bytes": None},
    ]
    assert judge_score(candidates) == pytest.approx((9 * 0.6 + 7 * 0.2) / 0.8)
    assert judge_score([{"token": "x", "logprob": 0.0, "bytes": None}]) == 0.0
    assert review("specreason", None, judged=6.9, threshold=7.0) == "large"
    assert review("specreason", None, judged=7.0, threshold=7.0) == "keep"


def test_judge_request_scores_the_last_step_in_specreasons_words():
    messages = judge_messages("What is 1+1?", ["a", "b"])
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == "<think>\na\n\nb\n\n"
    assert "Assign a score from 0 to 9." in messages[2]["content"]
    assert messages[3]["content"] == "<think>I think the quality score is: "
