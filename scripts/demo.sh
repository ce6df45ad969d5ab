#!/usr/bin/env bash
# The whole demo on a fresh machine: install, fetch and prepare the local model pair, serve it
# with vLLM, and answer a sample question with the routed steps shown live.
#   bash scripts/demo.sh ["your question"]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/venv.sh"
bash "$root/scripts/setup.sh"
exec "$venv/bin/glimprouter" demo ${1:+--question "$1"}
