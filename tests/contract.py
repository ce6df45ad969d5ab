"""What the compiled graph shows its users, written once for the tests that check it: the nodes
Studio draws and the keys of a run's output."""

ROUTER_NODES = frozenset(
    {"glimpse", "decide", "small_step", "large_step", "review", "check_termination", "answer"}
)
OUTPUT_KEYS = frozenset(
    {"answer", "final_answer", "steps", "usage", "stop_reason", "error", "answer_cut"}
)
