"""review: the strategy keeps the small model's draft as the next step or hands the step to the
large model; a judge call it makes through the view's handle is sent and counted here."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import RouterState, Step
from glimprouter.model_servers.client import ContextOverflow, complete
from glimprouter.nodes.common import (
    CHAIN_SPENT,
    chain_id_of,
    chain_spent,
    commit_step,
    prompt_args,
    run_strategy,
    step_texts,
)
from glimprouter.nodes.routing import step_view
from glimprouter.prompts import judge_messages
from glimprouter.scoring import judge_score

JUDGE_TOP_LOGPROBS = 10  # SpecReason reads the judge's top 10 candidates


class _ChainSpent(Exception):
    """The chain has no tokens left for a judge call."""


class _Judge:
    """The view's judge handle: the large model scores a draft 0-9 (SpecReason's prompt); the
    score becomes the draft's and the request joins the chain's usage."""

    def __init__(self, state: RouterState, context: RouterContext) -> None:
        self.state, self.context = state, context
        self.score: float | None = None
        self.usage: dict[str, Any] = {}

    async def __call__(self, draft: Step) -> float:
        if chain_spent(self.state, self.context):
            raise _ChainSpent
        verdict = await complete(
            self.context,
            "large",
            judge_messages(
                step_texts=[*step_texts(self.state), draft["text"]],
                **prompt_args(self.state, self.context),
            ),
            chain_id=chain_id_of(self.state),
            max_tokens=1,
            temperature=0.0,
            top_logprobs=JUDGE_TOP_LOGPROBS,
            stream=False,
        )
        self.score = judge_score(verdict.first_token_top_logprobs)
        self.usage = verdict.usage("large")
        return self.score


async def review(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
    """Keep the draft as the next step, or leave it for the large model to rewrite."""
    context, strategy = run_strategy(runtime)
    draft = state["draft_step"]
    judge = _Judge(state, context)
    try:
        verdict = await strategy.review(step_view(state, context, strategy, judge=judge), draft)
    except _ChainSpent:
        return CHAIN_SPENT
    except ContextOverflow:
        return {"stop_reason": "context_length", "draft_step": None}
    score = draft["score"] if judge.score is None else judge.score
    if verdict == "large":
        return {"draft_step": {**draft, "score": score}, "writer": "large", "usage": judge.usage}
    return {**commit_step({**draft, "score": score}), "draft_step": None, "usage": judge.usage}


def route_after_review(state: RouterState) -> Literal["large_step", "check_termination"]:
    """Edge after review: a rejected draft goes to the large model."""
    return "large_step" if state.get("draft_step") else "check_termination"
