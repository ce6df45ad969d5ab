"""Property-based tests: the scores and parsers hold their rules on any input, malformed included.

The rules for malformed server replies (see glimprouter.scoring.usable_logprob): NaN, +inf and
non-numeric log-probabilities are left out, -inf is a zero probability, fewer candidates than
asked give the entropy of those given, and a token with nothing usable has no score.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glimprouter.parsing import last_boxed, split_step
from glimprouter.prompts import STEP_SEPARATOR
from glimprouter.scoring import (
    has_mass,
    judge_score,
    mean_token_entropy,
    perplexity,
    top_k_entropy,
)

finite_logprob = st.floats(min_value=-50.0, max_value=0.0, allow_nan=False)
faulty_logprob = st.one_of(
    st.just(math.nan), st.just(math.inf), st.none(), st.text(max_size=3), st.booleans()
)


@st.composite
def candidates(draw, min_size=1, max_size=20):
    """Distinct top-k candidates with finite log-probabilities."""
    values = draw(st.lists(finite_logprob, min_size=min_size, max_size=max_size))
    return [{"token": f"t{i}", "bytes": [i], "logprob": v} for i, v in enumerate(values)]


@given(candidates())
def test_entropy_lies_between_zero_and_log_k(top):
    entropy = top_k_entropy(top)
    assert -1e-9 <= entropy <= math.log(len(top)) + 1e-9


@given(candidates(), st.randoms())
def test_entropy_ignores_order(top, random):
    shuffled = list(top)
    random.shuffle(shuffled)
    assert top_k_entropy(shuffled) == pytest.approx(top_k_entropy(top), abs=1e-9)


@given(candidates(), st.floats(min_value=-20, max_value=0))
def test_entropy_ignores_a_common_shift(top, shift):
    shifted = [{**entry, "logprob": entry["logprob"] + shift} for entry in top]
    assert top_k_entropy(shifted) == pytest.approx(top_k_entropy(top), abs=1e-7)


@given(candidates(), st.lists(faulty_logprob, min_size=1, max_size=5))
def test_faulty_entries_are_left_out(top, faults):
    noisy = top + [
        {"token": f"bad{i}", "bytes": [100 + i], "logprob": fault} for i, fault in enumerate(faults)
    ]
    assert top_k_entropy(noisy) == pytest.approx(top_k_entropy(top), abs=1e-12)


@given(candidates(), st.integers(min_value=1, max_value=5))
def test_zero_probability_and_duplicate_entries_change_nothing(top, copies):
    padded = top + [{"token": "z", "bytes": [255], "logprob": -math.inf}] + top[:1] * copies
    assert top_k_entropy(padded) == pytest.approx(top_k_entropy(top), abs=1e-12)


@given(st.lists(st.one_of(faulty_logprob, st.just(-math.inf)), max_size=5))
def test_nothing_usable_means_nothing_to_score(faults):
    top = [{"token": f"t{i}", "bytes": [i], "logprob": f} for i, f in enumerate(faults)]
    assert not has_mass(top)
    with pytest.raises(ValueError):
        top_k_entropy(top)


@given(st.lists(candidates(min_size=0), max_size=6))
def test_step_entropy_scores_the_usable_tokens_or_says_there_are_none(tokens):
    if any(tokens):
        scored = [top_k_entropy(top) for top in tokens if top]
        assert mean_token_entropy(tokens) == pytest.approx(sum(scored) / len(scored))
    else:
        with pytest.raises(ValueError):
            mean_token_entropy(tokens)


@given(st.lists(st.one_of(finite_logprob, faulty_logprob), max_size=10))
def test_perplexity_is_at_least_one_over_the_usable_values(values):
    usable = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    if usable:
        assert perplexity(values) >= 1.0 - 1e-12
    else:
        with pytest.raises(ValueError):
            perplexity(values)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "token": st.sampled_from(list("0123456789") + ["x", " 7", ""]),
                "logprob": st.one_of(finite_logprob, faulty_logprob),
            }
        ),
        max_size=12,
    )
)
def test_judge_score_is_a_digit_mean(top):
    assert 0.0 <= judge_score(top) <= 9.0


@given(st.text(), st.sampled_from(["stop", "length", None, "tool_calls", "content_filter"]))
def test_split_step_keeps_the_text_and_names_a_known_end(text, finish_reason):
    body, finish = split_step(text, finish_reason)
    assert finish in ("separator", "end_of_sequence", "length")
    assert body + (STEP_SEPARATOR if finish == "separator" else "") == text


@given(st.text())
def test_last_boxed_never_raises_and_returns_text_from_the_input(text):
    found = last_boxed(text)
    assert found is None or found in text


@given(
    st.text(alphabet=st.characters(blacklist_characters="{}\\"), max_size=40),
    st.text(alphabet=st.characters(blacklist_characters="{}\\"), max_size=20),
    st.text(alphabet=st.characters(blacklist_characters="{}\\"), max_size=40),
)
def test_last_boxed_reads_the_last_box_with_nested_braces(before, content, after):
    text = f"{before}\\boxed{{x}} then \\boxed{{{{{content}}}}}{after}"
    assert last_boxed(text) == "{" + content + "}"
