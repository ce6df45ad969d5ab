"""`glimprouter serve-router`: its flags, and the handler that serves with them."""

from __future__ import annotations

import argparse
from pathlib import Path

from glimprouter.context_flags import add_context_flags, context_from_args
from glimprouter.endpoint.keys import KEYS_ENV, keys_from
from glimprouter.endpoint.limits import (
    COST_LIMITS,
    DEFAULT_MODEL_NAME,
    LIMITED,
    RouterLimits,
    limit_flag,
    server_flags,
)
from glimprouter.extras import require
from glimprouter.graph.threads import CHECKPOINT_DB_ENV, checkpoint_db_from_env
from glimprouter.prompts import TEMPLATES
from glimprouter.threads_command import add_max_checkpoints_flag, duration


def add_router_command(commands: argparse._SubParsersAction) -> None:
    """Register `serve-router` on the top-level parser."""
    parser = commands.add_parser(
        "serve-router",
        help="serve GlimpRouter as one model behind an OpenAI-compatible endpoint",
        description="Serve /v1/chat/completions and /v1/models: the last user message is the "
        "question, the chain of thought comes back as reasoning_content and the answer as "
        "content. Requests may set routing knobs in the body (extra_body), up to the limits "
        "below; the routing flags are the defaults.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    parser.add_argument(
        "--served-model-name",
        default=DEFAULT_MODEL_NAME,
        help=f"model id clients ask for (default {DEFAULT_MODEL_NAME})",
    )
    parser.add_argument(
        "--task",
        default="math",
        choices=sorted(TEMPLATES),
        help="prompt family of requests that set no task (default math)",
    )
    access = parser.add_argument_group("access")
    access.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help=f"a key clients must send as 'Authorization: Bearer KEY' (repeatable; shows in ps: "
        f"prefer --api-key-file or {KEYS_ENV}, comma-separated)",
    )
    access.add_argument(
        "--api-key-file",
        action="append",
        type=Path,
        metavar="PATH",
        help="a file of keys, one per line (repeatable)",
    )
    access.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback --host with no API key (anyone who reaches it may use it)",
    )
    access.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name requests may address, as behind a proxy (repeatable); on a loopback "
        "--host only loopback names are answered besides (DNS rebinding), elsewhere any when "
        "none is given",
    )
    access.add_argument(
        "--open-metrics",
        action="store_true",
        help="serve /metrics without a key (by default it needs one, when keys are set)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="router processes serving the port (default 1); they share only --checkpoint-db, "
        "and /metrics sums them",
    )
    threads = parser.add_argument_group("threads (chains kept across requests)")
    threads.add_argument(
        "--checkpoint-db",
        metavar="LOCATION",
        help="keep the chains of requests that carry a thread_id: a SQLite file, or a PostgreSQL "
        f"URI postgresql://... that several router processes share (default: {CHECKPOINT_DB_ENV}"
        ", if set)",
    )
    threads.add_argument(
        "--thread-ttl",
        type=duration,
        metavar="DURATION",
        help="delete the threads not run or read for this long (90s, 30m, 12h, 7d), swept at "
        "start and every quarter of it (at most hourly) while serving (default: keep them)",
    )
    add_max_checkpoints_flag(threads)
    group = parser.add_argument_group(
        "request limits (default: the server's own setting, so a request may not make its chain "
        "cost more)"
    )
    for knob, (_, flag) in LIMITED.items():
        group.add_argument(flag, type=int, metavar="N", help=f"largest {knob} a request may set")
    for limit in COST_LIMITS:
        listed = "refused" not in limit.metadata
        group.add_argument(
            limit_flag(limit.name),
            type=_names if listed else float,
            metavar="A,B" if listed else "X",
            help=limit.metadata["help"],
        )
    bounds = parser.add_argument_group("load and slow clients")
    for field in server_flags():
        metadata = field.metadata
        bounds.add_argument(
            metadata["flag"],
            *metadata["aliases"],
            dest=field.name,
            type=metadata["type"],
            metavar=metadata["metavar"],
            default=field.default,
            help=metadata["flag_help"],
        )
    add_context_flags(parser)
    parser.set_defaults(handler=_serve_router_command)


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names (checked against the valid ones when the app starts)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _serve_router_command(args: argparse.Namespace) -> int:
    limits = RouterLimits(
        **{attribute: getattr(args, attribute) for attribute, _ in LIMITED.values()},
        **{limit.name: getattr(args, limit.name) for limit in COST_LIMITS},
        **{field.name: getattr(args, field.name) for field in server_flags()},
    )
    serve_router = require("glimprouter.endpoint.server").serve_router
    try:
        serve_router(
            context_from_args(args),
            limits,
            host=args.host,
            port=args.port,
            served_model_name=args.served_model_name,
            task=args.task,
            api_keys=keys_from(args.api_key, args.api_key_file),
            allow_unauthenticated=args.allow_unauthenticated,
            open_metrics=args.open_metrics,
            checkpoint_db=args.checkpoint_db or checkpoint_db_from_env(),
            thread_ttl=args.thread_ttl,
            max_thread_checkpoints=args.max_thread_checkpoints,
            allowed_hosts=args.allowed_host or (),
            workers=args.workers,
        )
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C or SIGTERM once it has shut down: a stop
        pass
    return 0
