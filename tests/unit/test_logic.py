"""Pure logic of the routing loop: scores, decisions, prefixes, termination, answers."""

import dataclasses
import math

import pytest

from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext, resolve_context
from glimprouter.graph.state import add_usage
from glimprouter.nodes.common import chain_tokens_left, generated_tokens
from glimprouter.nodes.decide import route_to_writer
from glimprouter.nodes.next_step import step_allowance
from glimprouter.nodes.termination import route_after_check, stop_reason
from glimprouter.parsing import last_boxed, split_step
from glimprouter.prompts import answer_prefix, render_question, thinking_prefix
from glimprouter.scoring import entropy_of_logprobs, top_k_entropy
from glimprouter.strategies import choose_writer


def entries(logprobs, tokens=None, byte_values=None):
    tokens = tokens or [f"t{i}" for i in range(len(logprobs))]
    byte_values = byte_values or [list(t.encode()) for t in tokens]
    return [
        {"token": t, "logprob": lp, "bytes": b}
        for t, lp, b in zip(tokens, logprobs, byte_values, strict=True)
    ]


class TestEntropy:
    def test_uniform_top_k_is_log_k(self):
        assert top_k_entropy(entries([math.log(1 / 20)] * 20)) == pytest.approx(math.log(20))

    def test_certain_token_is_zero(self):
        assert top_k_entropy(entries([0.0, -math.inf, -math.inf])) == pytest.approx(0.0)

    def test_renormalises_the_truncated_distribution(self):
        # Two candidates holding 0.3 and 0.1 of the mass: renormalised to 0.75 / 0.25.
        expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
        assert top_k_entropy(entries([math.log(0.3), math.log(0.1)])) == pytest.approx(expected)

    def test_two_tokens_decoding_to_the_same_string_both_count(self):
        # Two byte-fallback tokens both shown as U+FFFD: keyed by string they would merge.
        same_string = entries(
            [math.log(0.5), math.log(0.5)],
            tokens=["\ufffd", "\ufffd"],
            byte_values=[[0xE2], [0xF0]],
        )
        assert top_k_entropy(same_string) == pytest.approx(math.log(2))

    def test_token_without_bytes_falls_back_to_its_text(self):
        distinct = [
            {"token": "a", "logprob": math.log(0.5), "bytes": None},
            {"token": "b", "logprob": math.log(0.5), "bytes": None},
        ]
        assert top_k_entropy(distinct) == pytest.approx(math.log(2))

    def test_a_repeated_entry_counts_once(self):
        repeated = entries([math.log(0.5), math.log(0.5), math.log(0.5)], tokens=["a", "a", "b"])
        assert top_k_entropy(repeated) == pytest.approx(math.log(2))

    def test_no_finite_logprob_is_an_error(self):
        with pytest.raises(ValueError):
            entropy_of_logprobs([-math.inf])


class TestDecision:
    def test_at_the_threshold_goes_large(self):
        assert choose_writer(1.0, 1.0) == "large"

    def test_just_below_goes_small(self):
        assert choose_writer(math.nextafter(1.0, 0.0), 1.0) == "small"

    def test_threshold_zero_sends_even_a_certain_step_large(self):
        assert choose_writer(0.0, 0.0) == "large"

    def test_routing_edge_follows_the_writer_and_stops_early(self):
        assert route_to_writer({"writer": "small"}) == "small_step"
        assert route_to_writer({"writer": "large"}) == "large_step"
        assert route_to_writer({"writer": None, "stop_reason": "context_length"}) == "answer"


class TestPrefixes:
    def test_first_step_continues_an_opened_think(self):
        assert thinking_prefix([]) == "<think>\n"

    def test_each_step_ends_with_a_blank_line(self):
        assert thinking_prefix(["a", "b"]) == "<think>\na\n\nb\n\n"

    def test_answer_closes_the_thinking_once(self):
        assert answer_prefix(["a", "b"]) == "<think>\na\n\nb\n</think>\n\n"

    def test_answer_drops_what_followed_an_existing_close(self):
        assert (
            answer_prefix(["a", "done.</think>\nThe answer"]) == "<think>\na\n\ndone.\n</think>\n\n"
        )

    def test_question_is_rendered_into_the_task_template(self):
        text = render_question("What is {x}?", "math")
        assert "Problem: What is {x}?" in text and "\\boxed{}" in text

    def test_empty_question_is_refused(self):
        with pytest.raises(ConfigError, match="question is empty"):
            render_question("  ")

    def test_unknown_task_lists_the_valid_ones(self):
        with pytest.raises(ConfigError, match="valid tasks"):
            render_question("q", "poetry")

    def test_custom_template_needs_the_placeholder(self):
        assert render_question("q", template="Q: {question}") == "Q: q"
        with pytest.raises(ConfigError, match="{question}"):
            render_question("q", template="no placeholder")


class TestStepEnd:
    def test_separator_is_stripped(self):
        assert split_step("x = 1.\n\n", "stop") == ("x = 1.", "separator")

    def test_stop_without_separator_is_end_of_sequence(self):
        assert split_step("x = 1.", "stop") == ("x = 1.", "end_of_sequence")

    def test_length(self):
        assert split_step("x = 1", "length") == ("x = 1", "length")

    def test_allowance_never_passes_the_budget(self):
        assert step_allowance(512, 8192, 0) == 512
        assert step_allowance(512, 8192, 8000) == 192
        assert step_allowance(512, 8192, 8192) == 0

    def test_allowance_never_passes_what_the_chain_has_left(self):
        assert step_allowance(512, 8192, 0, chain_left=None) == 512
        assert step_allowance(512, 8192, 0, chain_left=30) == 30
        assert step_allowance(512, 8192, 8000, chain_left=300) == 192
        assert step_allowance(512, 8192, 0, chain_left=0) == 0


def step(text, finish="separator", tokens=10):
    return {
        "index": 0,
        "model": "small",
        "entropy": 0.5,
        "text": text,
        "finish": finish,
        "completion_tokens": tokens,
        "prompt_tokens": 0,
        "wall_s": 0.0,
    }


class TestTermination:
    def test_goes_on(self):
        assert stop_reason([step("a"), step("b")], 8192, 512) is None
        assert stop_reason([], 8192, 512) is None

    def test_think_close(self):
        assert stop_reason([step("so x=2.</think>")], 8192, 512) == "think_end"

    def test_end_of_sequence(self):
        assert stop_reason([step("a", finish="end_of_sequence")], 8192, 512) == "end_of_sequence"

    def test_repeated_step(self):
        assert stop_reason([step("a"), step("a")], 8192, 512) == "repeated_step"

    def test_budget(self):
        assert stop_reason([step("a", tokens=60), step("b", tokens=40)], 100, 512) == "token_budget"
        assert stop_reason([step("a", tokens=60), step("b", tokens=39)], 100, 512) is None

    def test_max_steps(self):
        assert stop_reason([step("a"), step("b")], 8192, 2) == "max_steps"

    def test_chain_tokens_spent(self):
        assert stop_reason([step("a")], 8192, 512, chain_left=0) == "max_chain_tokens"
        assert stop_reason([step("a")], 8192, 512, chain_left=1) is None
        assert stop_reason([step("a")], 8192, 512, chain_left=None) is None
        # The chain's own end is the truer reason when both hold.
        ended = [step("a", finish="end_of_sequence")]
        assert stop_reason(ended, 8192, 512, chain_left=0) == "end_of_sequence"


class TestChainTokens:
    USAGE = {
        "small": {"requests": 4, "prompt_tokens": 900, "completion_tokens": 13},
        "large": {"requests": 2, "prompt_tokens": 400, "completion_tokens": 20},
    }

    def test_every_request_of_every_model_counts(self):
        assert generated_tokens(self.USAGE) == 33
        assert generated_tokens(None) == generated_tokens({}) == 0

    def test_the_answer_allowance_is_kept_aside(self):
        assert chain_tokens_left(100, 16, 33) == 51
        assert chain_tokens_left(100, 16, 84) == 0
        assert chain_tokens_left(100, 16, 90) == 0  # never negative
        assert chain_tokens_left(None, 16, 10**6) is None

    def test_a_limit_must_leave_room_beyond_the_answer(self):
        with pytest.raises(ConfigError, match="max_chain_tokens=16 leaves no room"):
            RouterContext(max_chain_tokens=16, answer_max_tokens=16)
        assert RouterContext(max_chain_tokens=17, answer_max_tokens=16).max_chain_tokens == 17

    def test_edge(self):
        assert route_after_check({"stop_reason": None}) == "glimpse"
        assert route_after_check({"stop_reason": "think_end"}) == "answer"


class TestAnswer:
    def test_last_boxed_with_nested_braces(self):
        assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"

    def test_fbox_and_missing(self):
        assert last_boxed(r"\fbox{B}") == "B"
        assert last_boxed("no box here") is None
        assert last_boxed(r"\boxed{unclosed") is None


class TestContext:
    def test_defaults_follow_the_paper(self):
        context = RouterContext()
        assert (context.threshold, context.top_k, context.step_max_tokens) == (1.0, 20, 512)
        assert (context.token_budget, context.answer_model) == (8192, "large")
        assert (context.temperature, context.top_p) == (0.6, 0.95)

    def test_environment_fills_unset_fields(self, monkeypatch):
        monkeypatch.setenv("GLIMPROUTER_THRESHOLD", "0.25")
        monkeypatch.setenv("GLIMPROUTER_SEED", "7")
        context = RouterContext()
        assert context.threshold == 0.25 and context.seed == 7
        assert RouterContext(threshold=2.0).threshold == 2.0

    def test_an_explicit_default_value_beats_the_environment(self, monkeypatch):
        # `--threshold 1.0` or a request's threshold=1.0 must not turn into the env's value.
        monkeypatch.setenv("GLIMPROUTER_THRESHOLD", "0.25")
        assert RouterContext(threshold=1.0).threshold == 1.0
        assert resolve_context({"threshold": 1.0}).threshold == 1.0
        assert dataclasses.replace(RouterContext(), threshold=1.0).threshold == 1.0
        assert dataclasses.replace(RouterContext(), top_k=5).threshold == 0.25

    def test_bad_environment_value_names_the_variable(self, monkeypatch):
        monkeypatch.setenv("GLIMPROUTER_TOP_K", "many")
        with pytest.raises(ConfigError, match="GLIMPROUTER_TOP_K"):
            RouterContext()

    def test_negative_threshold_names_the_setting(self):
        with pytest.raises(ConfigError, match="threshold.*GLIMPROUTER_THRESHOLD"):
            RouterContext(threshold=-0.1)

    def test_answer_model_must_be_a_role(self):
        with pytest.raises(ConfigError, match="answer_model"):
            RouterContext(answer_model="medium")

    def test_dict_context_with_unknown_field_lists_the_valid_ones(self):
        with pytest.raises(ConfigError, match="valid fields"):
            resolve_context({"treshold": 1.0})
        assert resolve_context({"threshold": 0.5}).threshold == 0.5
        assert resolve_context(None).threshold == 1.0

    def test_recursion_limit_follows_the_step_budget(self):
        assert RouterContext(max_steps=10).recursion_limit == 68


def test_usage_sums_per_model():
    total = add_usage(None, {"small": {"requests": 1, "prompt_tokens": 5, "completion_tokens": 1}})
    total = add_usage(total, {"small": {"requests": 1, "prompt_tokens": 6, "completion_tokens": 9}})
    total = add_usage(total, {"large": {"requests": 1, "prompt_tokens": 7, "completion_tokens": 3}})
    assert total == {
        "small": {"requests": 2, "prompt_tokens": 11, "completion_tokens": 10},
        "large": {"requests": 1, "prompt_tokens": 7, "completion_tokens": 3},
    }
