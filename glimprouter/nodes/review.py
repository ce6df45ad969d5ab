"""review: score the small model's draft, then keep it or hand the step to the large model."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import RouterState
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
from glimprouter.prompts import judge_messages
from glimprouter.scoring import judge_score

JUDGE_TOP_LOGPROBS = 10  # SpecReason reads the judge's top 10 candidates


async def review(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
    """Keep the draft as the next step, or leave it for the large model to rewrite."""
    context, strategy = run_strategy(runtime)
    draft = state["draft_step"]
    score = draft["score"]
    usage: dict[str, Any] = {}
    if strategy.review == "judge":
        if chain_spent(state, context):
            return CHAIN_SPENT
        try:
            verdict = await complete(
                context,
                "large",
                judge_messages(
                    step_texts=[*step_texts(state), draft["text"]], **prompt_args(state, context)
                ),
                chain_id=chain_id_of(state),
                max_tokens=1,
                temperature=0.0,
                top_logprobs=JUDGE_TOP_LOGPROBS,
                stream=False,
            )
        except ContextOverflow:
            return {"stop_reason": "context_length", "draft_step": None}
        score = judge_score(verdict.first_token_top_logprobs)
        usage = verdict.usage("large")
    if score is not None and strategy.rewrite(score, context.threshold):
        return {"draft_step": {**draft, "score": score}, "writer": "large", "usage": usage}
    return {**commit_step({**draft, "score": score}), "draft_step": None, "usage": usage}


def route_after_review(state: RouterState) -> Literal["large_step", "check_termination"]:
    """Edge after review: a rejected draft goes to the large model."""
    return "large_step" if state.get("draft_step") else "check_termination"
