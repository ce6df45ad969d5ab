#!/usr/bin/env bash
# The whole demo on a fresh machine: install, fetch and prepare the local model pair, serve it
# with vLLM, and answer a sample question with the routed steps shown live.
#   bash scripts/demo.sh ["your question" [threshold]]
# The default question and threshold are chosen for the local Qwen2.5-Coder pair so that its
# chain has several steps and both models write: a question worked one line at a time (the pair's
# steps end at a line break), and a threshold of 1.3 nats, between the glimpse entropies this
# pair shows at its steps' starts (1.1 to 1.6 in a run at the default 1.0, where the large model
# wrote both steps of the sample question). Measured on a 2-core CPU: 7 steps, 2 large and 5
# small, answer 1081, in 32 s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/venv.sh"
bash "$root/scripts/setup.sh"
question="${1:-Compute 23 * 47 without a calculator. Work it out one short line at a time: first 23 * 40, then 23 * 7, then add the two.}"
exec "$venv/bin/glimprouter" demo --question "$question" --threshold "${2:-1.3}"
