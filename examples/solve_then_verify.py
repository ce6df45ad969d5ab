"""Solve, then verify: a larger LangGraph agent that uses GlimpRouter for its reasoning.

The agent has its own state (a problem, its attempts, a verdict). Its `solve` node maps that state
to GlimpRouter's input, runs the routed chain of thought as a subgraph, and maps the result back;
its `verify` node asks the large model whether the answer holds and, if not, the agent solves
again with the verifier's critique as a hint (up to `max_attempts`).

    START -> solve -> verify -> END
               ^         |
               +- retry -+   (verdict not "correct" and attempts left)

Run settings are a `SolveContext`: every GlimpRouter knob (it *is* a RouterContext, so the solve
node forwards it to the subgraph unchanged) plus the agent's own. Like GlimpRouter's, each falls
back to a `GLIMPROUTER_<FIELD>` variable.

    python examples/solve_then_verify.py "What is 12 + 7 * 3?"
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import sys
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer
from typing_extensions import TypedDict  # pydantic (Studio schemas) needs it before 3.12

from glimprouter import (
    MODEL_ROLES,
    ConfigError,
    GlimpRouterError,
    InputState,
    ModelRole,
    ModelUsage,
    OutputState,
    RouterContext,
    StopReason,
    add_usage,
    complete,
    continuation_messages,
    new_chain_id,
    run_config,
)
from glimprouter import graph as router_graph

MAX_ATTEMPTS_LIMIT = 10
Verdict = Literal["correct", "incorrect", "unsure"]


# --- run settings ----------------------------------------------------------------------------


@dataclass(kw_only=True)
class SolveContext(RouterContext):
    """GlimpRouter's settings plus the verifier's and the retry budget."""

    max_attempts: int = field(
        default=2,
        metadata={"description": "Most solve attempts; a rejected answer is retried with a hint."},
    )
    verifier_model: ModelRole = field(
        default="large",
        metadata={"description": "Which model checks each answer: small or large."},
    )
    verify_max_tokens: int = field(
        default=128,
        metadata={"description": "Most tokens of the verifier's verdict and critique."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # GLIMPROUTER_* fallbacks (ours included) and the router's checks
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ConfigError(
                f"max_attempts={self.max_attempts!r} must be in [1, {MAX_ATTEMPTS_LIMIT}] (set it "
                "in the run context or GLIMPROUTER_MAX_ATTEMPTS)"
            )
        if self.verifier_model not in MODEL_ROLES:
            raise ConfigError(
                f"verifier_model={self.verifier_model!r} must be one of {list(MODEL_ROLES)} (set "
                "it in the run context or GLIMPROUTER_VERIFIER_MODEL)"
            )
        if self.verify_max_tokens < 1:
            raise ConfigError(
                f"verify_max_tokens={self.verify_max_tokens!r} must be at least 1 (set it in the "
                "run context or GLIMPROUTER_VERIFY_MAX_TOKENS)"
            )


def solve_context(context: RouterContext | dict[str, Any] | None) -> SolveContext:
    """The agent's settings from what the caller passed: nothing (defaults and env), a dict, a
    plain RouterContext (the agent's own knobs at their defaults) or a SolveContext."""
    if isinstance(context, SolveContext):
        return context
    if isinstance(context, RouterContext):
        return SolveContext(**{f.name: getattr(context, f.name) for f in fields(RouterContext)})
    known = {f.name for f in fields(SolveContext)}
    unknown = sorted(set(context or {}) - known)
    if unknown:
        raise ConfigError(f"unknown context field(s) {unknown}; valid fields: {sorted(known)}")
    return SolveContext(**(context or {}))


# --- state -----------------------------------------------------------------------------------


class Attempt(TypedDict):
    """One routed solution and what the verifier said about it."""

    answer: str  # what GlimpRouter's answer model wrote after the thinking
    final_answer: str | None  # its last \boxed{}
    steps: int  # reasoning steps of the chain
    large_steps: int  # of which the large model wrote
    stop_reason: StopReason | None
    verdict: Verdict | None  # None until verified
    critique: str


class ProblemInput(TypedDict):
    """What a caller gives the agent."""

    problem: str


class SolveOutput(TypedDict):
    """What the agent returns: the last attempt's answer, its verdict, and every attempt."""

    answer: str
    final_answer: str | None
    verdict: Verdict | None
    attempts: Annotated[list[Attempt], operator.add]
    usage: Annotated[dict[str, ModelUsage], add_usage]  # routed chains and verifications


class SolveState(ProblemInput, SolveOutput):
    """The agent's full state: the output so far plus the attempt awaiting its verdict."""

    pending: Attempt | None


# --- mapping the agent's state to GlimpRouter's and back (pure) ------------------------------


def retry_hint(rejected: Attempt) -> str:
    """What the next attempt is told about the last rejected one."""
    shown = rejected["final_answer"] or "no boxed answer"
    why = rejected["critique"] or "no reason given"
    return (
        f"A reviewer rejected an earlier answer ({shown}): {why} "
        "Solve the problem again from the start, checking each step."
    )


def router_input(state: SolveState) -> InputState:
    """GlimpRouter's input for the next attempt: the problem, plus a hint after a rejection."""
    question = state["problem"]
    attempts = state.get("attempts") or []
    if attempts and attempts[-1]["verdict"] != "correct":
        question = f"{question}\n\n{retry_hint(attempts[-1])}"
    return {"question": question, "task": "math"}


def attempt_from_output(output: OutputState) -> Attempt:
    """The agent's record of one GlimpRouter run, not yet verified."""
    steps = output.get("steps") or []
    return {
        "answer": output.get("answer") or "",
        "final_answer": output.get("final_answer"),
        "steps": len(steps),
        "large_steps": sum(step["model"] == "large" for step in steps),
        "stop_reason": output.get("stop_reason"),
        "verdict": None,
        "critique": "",
    }


# --- the verifier's prompt and its reading (pure) --------------------------------------------

VERIFY_PROMPT = (
    "Check a proposed solution to a math problem.\n\n"
    "Problem: {problem}\n\n"
    "Proposed solution: {answer}\n\n"
    "Final answer: {final_answer}\n\n"
    "Is the final answer correct? Reply CORRECT or INCORRECT, then one sentence saying why."
)
VERDICT_PREFIX = "Verdict:"
_VERDICT_WORDS: dict[str, Verdict] = {
    "correct": "correct",
    "yes": "correct",
    "right": "correct",
    "incorrect": "incorrect",
    "wrong": "incorrect",
    "no": "incorrect",
    "not": "incorrect",
}


def verify_messages(problem: str, attempt: Attempt) -> list[dict[str, str]]:
    """The verifier's request: the problem and the attempt, the reply started at 'Verdict:'."""
    prompt = (
        VERIFY_PROMPT.replace("{problem}", problem)
        .replace("{answer}", attempt["answer"].strip() or "(empty)")
        .replace("{final_answer}", attempt["final_answer"] or "none given")
    )
    return continuation_messages(prompt, VERDICT_PREFIX)


def parse_verdict(text: str) -> tuple[Verdict, str]:
    """The verdict in the verifier's reply (its first word) and the critique after it."""
    words = text.split()
    if not words:
        return "unsure", ""
    first = words[0].strip("*_.,:;!\"'`").lower()
    critique = " ".join(words[1:]).lstrip("*_.,:;-– ")
    return _VERDICT_WORDS.get(first, "unsure"), critique[:500]


def route_after_verify(state: SolveState, runtime: Runtime[SolveContext]) -> str:
    """Stop at an accepted answer or when the attempts are spent; otherwise solve again."""
    attempts = state.get("attempts") or []
    if state.get("verdict") == "correct":
        return END
    if len(attempts) >= solve_context(runtime.context).max_attempts:
        return END
    return "solve"


# --- nodes -----------------------------------------------------------------------------------


async def solve(state: SolveState, runtime: Runtime[SolveContext]) -> dict[str, Any]:
    """Run GlimpRouter on the problem (with the last critique as a hint) and keep the result.

    The run context is forwarded explicitly: a subgraph called from a node would otherwise
    inherit the parent's context object as it is, which only works while that object is a
    RouterContext.
    """
    context = solve_context(runtime.context)
    output = await router_graph.ainvoke(
        router_input(state), context=context, config=run_config(context)
    )
    return {"pending": attempt_from_output(output), "usage": output["usage"]}


async def verify(state: SolveState, runtime: Runtime[SolveContext]) -> dict[str, Any]:
    """Ask the verifier model whether the pending attempt's answer is right."""
    context = solve_context(runtime.context)
    attempt = state["pending"]
    assert attempt is not None, "verify runs after solve"
    reply = await complete(
        context,
        context.verifier_model,
        verify_messages(state["problem"], attempt),
        chain_id=new_chain_id(),  # one request: nothing of it to keep in a replica's cache
        max_tokens=context.verify_max_tokens,
        temperature=0.0,
    )
    verdict, critique = parse_verdict(reply.text)
    checked: Attempt = {**attempt, "verdict": verdict, "critique": critique}
    return {
        "attempts": [checked],
        "pending": None,
        "answer": checked["answer"],
        "final_answer": checked["final_answer"],
        "verdict": verdict,
        "usage": reply.usage(context.verifier_model),
    }


# --- the graph -------------------------------------------------------------------------------


def build_agent(checkpointer: Checkpointer = None) -> CompiledStateGraph:
    """Compile the solve-then-verify agent; GlimpRouter runs inside its solve node."""
    builder = StateGraph(
        SolveState,
        context_schema=SolveContext,
        input_schema=ProblemInput,
        output_schema=SolveOutput,
    )
    builder.add_node("solve", solve)
    builder.add_node("verify", verify)

    builder.add_edge(START, "solve")
    builder.add_edge("solve", "verify")
    builder.add_conditional_edges("verify", route_after_verify, ["solve", END])

    compiled = builder.compile(checkpointer=checkpointer, name="SolveThenVerify")
    return compiled.with_config(recursion_limit=2 * MAX_ATTEMPTS_LIMIT + 5)


agent = build_agent()


# --- command line ----------------------------------------------------------------------------


async def solve_problem(problem: str, context: SolveContext, *, show: bool = True) -> SolveOutput:
    """Run the agent on one problem; with `show`, print each routed step and verdict live."""
    result: dict[str, Any] = {}
    verified = 0
    async for namespace, mode, data in agent.astream(
        {"problem": problem},
        context=context,
        stream_mode=["custom", "updates", "values"],
        subgraphs=True,
    ):
        if mode == "values" and not namespace:
            result = data
        elif show and mode == "custom" and data.get("event") == "step":
            entropy = "" if data["entropy"] is None else f" H={data['entropy']:.2f}"
            print(f"  step {data['index']:>2} {data['model']:<5}{entropy}  {data['text'].strip()}")
        elif show and mode == "updates" and not namespace and "verify" in data:
            verified += 1
            checked = data["verify"]["attempts"][-1]
            critique = f": {checked['critique']}" if checked["critique"] else ""
            shown = checked["final_answer"] or "(no boxed answer)"
            print(f"attempt {verified}: {shown} -> {checked['verdict']}{critique}")
    return result  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    """`python examples/solve_then_verify.py "problem"`: settings come from GLIMPROUTER_*."""
    parser = argparse.ArgumentParser(
        description="Solve a math problem with GlimpRouter, have the large model verify the "
        "answer, and retry with its critique. Endpoints, budgets and the routing threshold "
        "come from GLIMPROUTER_* variables (e.g. GLIMPROUTER_SMALL_BASE_URL, "
        "GLIMPROUTER_THRESHOLD, GLIMPROUTER_MAX_ATTEMPTS)."
    )
    parser.add_argument("problem", help="the problem to solve")
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(solve_problem(args.problem, SolveContext()))
    except GlimpRouterError as error:
        print(f"solve_then_verify: error: {error}", file=sys.stderr)
        return 2
    print(f"\nanswer: {result['answer'].strip()}")
    print(
        f"final answer: {result['final_answer'] or '(no boxed answer)'}  "
        f"(verdict: {result['verdict']}, {len(result['attempts'])} attempt(s))"
    )
    for role, usage in sorted(result["usage"].items()):
        print(
            f"{role}: {usage['requests']} requests, {usage['prompt_tokens']} prompt + "
            f"{usage['completion_tokens']} completion tokens"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
