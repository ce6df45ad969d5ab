"""answer: the answer model closes the thinking and writes the final answer."""

from __future__ import annotations

from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import RouterState
from glimprouter.model_servers.client import ContextOverflow, complete
from glimprouter.nodes.common import chain_id_of, prompt_args, run_context, step_texts
from glimprouter.nodes.warming import stop_warming
from glimprouter.parsing import last_boxed
from glimprouter.prompts import answer_messages


async def answer(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
    """Write the answer after </think>; the final answer is its last \\boxed{}, else the
    thinking's."""
    context = run_context(runtime)
    stop_warming(state)  # the answer's own request prefills what a warming one had left
    texts = step_texts(state)
    thinking_answer = last_boxed(context.step_separator.join(texts))
    role = context.answer_model
    try:
        result = await complete(
            context,
            role,
            answer_messages(step_texts=texts, **prompt_args(state, context)),
            chain_id=chain_id_of(state),
            max_tokens=context.answer_max_tokens,
            temperature=context.temperature,
            top_p=context.top_p,
        )
    except ContextOverflow:
        # The chain already fills the context: keep what the thinking concluded.
        return {"answer": "", "final_answer": thinking_answer}
    final_answer = last_boxed(result.text) or thinking_answer
    get_stream_writer()(
        {"event": "answer", "model": role, "text": result.text, "final_answer": final_answer}
    )
    return {
        "answer": result.text,
        "final_answer": final_answer,
        "answer_cut": result.finish_reason == "length",
        "usage": result.usage(role),
    }
