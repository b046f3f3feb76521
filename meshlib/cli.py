"""The ``meshlib`` command (also ``python -m meshlib``).

    meshlib demo [--duration S] [--agents N] [--concurrency N] [--lb-policy NAME] [--no-live] [--no-grpc]
    meshlib demo --registry etcd|consul [--duration S] [--no-live]
    meshlib demo --mtls [--duration S] [--no-live]
    meshlib config-docs              # docs/configuration.md, from meshlib.config
    meshlib config check [--all]     # validate MESHLIB_* and MESHLIB_CONFIG, print the effective config
    meshlib endpoints SERVICE        # what the mesh built from MESHLIB_* sees
    meshlib stats                    # mesh.stats() as JSON
    meshlib stats --url URL [--prometheus]  # a running process's, from its admin endpoint (MESHLIB_ADMIN)
    meshlib xds status [--json]      # CSDS-like: every xDS resource, its version and status

Exit status: 0 on success, 2 for a usage or configuration error (the message
says which setting and what is accepted), 130 when Ctrl-C ended the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Callable, Sequence

from . import __version__
from .errors import MeshError

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``meshlib`` command with ``argv`` (default: ``sys.argv[1:]``); return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except MeshError as exc:
        print(f"meshlib {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `meshlib stats | head`): exit quietly.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshlib",
        description="meshlib: an embeddable client-side service mesh for Python.",
    )
    parser.add_argument("--version", action="version", version=f"meshlib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="watch meshlib balance calls across local agents that slow down, fail and die",
        description=(
            "Start a few HTTP agents on 127.0.0.1 (two fast, one 10x slower, one that starts "
            "answering 503 at 40% of the run, one that goes down at 60%), call them through a "
            "Mesh from several threads, and show where meshlib sent the calls; a pool of gRPC agents "
            "with the same story runs beside them (--no-grpc to leave it out). No registry needed."
        ),
    )
    demo.add_argument("--duration", type=_positive_float, default=12.0, metavar="SECONDS", help="how long to run (default: 12)")
    demo.add_argument("--agents", type=_int_range(1, 50), default=5, metavar="N", help="number of agents, at least 4 for the whole story (default: 5)")
    demo.add_argument("--concurrency", type=_int_range(1, 64), default=4, metavar="N", help="client threads (default: 4)")
    demo.add_argument("--lb-policy", default=None, metavar="NAME", help=f"load-balancing policy: {_policies()} (default: meshlib's default, peak_ewma)")
    demo.add_argument("--no-live", action="store_true", help="print only the final summary, no live table")
    demo.add_argument("--grpc", action=argparse.BooleanOptionalAction, default=True,
                      help="also run the gRPC agent pool (default: on)")
    demo.add_argument(
        "--registry",
        choices=("etcd", "consul"),
        default=None,
        help="instead: agents register in a local etcd (the etcd binary) or the Consul API double, leave and crash, "
        "and a caller's mesh follows live (--duration and --no-live apply; --agents, --concurrency and --lb-policy do not)",
    )
    demo.add_argument("--mtls", action="store_true",
                      help="instead: two agents talk over mTLS with SPIFFE IDs; a certificate rotation mid-run, an impostor refused, an intruder denied")
    demo.set_defaults(handler=_demo)

    docs = sub.add_parser("config-docs", help="print the configuration reference (docs/configuration.md) as Markdown")
    docs.set_defaults(handler=_config_docs)

    config = sub.add_parser("config", help="configuration tools (meshlib config check)")
    config.set_defaults(handler=lambda args: config.print_help(sys.stderr) or EXIT_USAGE)
    check = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND").add_parser(
        "check",
        help="validate MESHLIB_* and the MESHLIB_CONFIG file without starting anything; "
        "print the effective configuration per service (secrets hidden)",
    )
    check.add_argument("--all", action="store_true", help="also list the keys left at their defaults")
    check.set_defaults(handler=_config_check)

    endpoints = sub.add_parser("endpoints", help="list a service's endpoints as the mesh built from MESHLIB_* sees them")
    endpoints.add_argument("service", metavar="SERVICE")
    endpoints.set_defaults(handler=_endpoints)

    stats = sub.add_parser("stats", help="print mesh.stats() of the mesh built from MESHLIB_* as JSON")
    stats.add_argument("--url", metavar="URL", help="read a running process's stats from its admin endpoint instead, e.g. http://127.0.0.1:9901")
    stats.add_argument("--prometheus", action="store_true", help="with --url: the Prometheus text (/stats/prometheus) instead of JSON")
    stats.set_defaults(handler=_stats)

    xds = sub.add_parser("xds", help="xDS: what the mesh built from MESHLIB_* received from its control plane")
    xds_sub = xds.add_subparsers(dest="xds_command", metavar="COMMAND")
    xds_status = xds_sub.add_parser("status", help="CSDS-like: the server, and per resource its type, version, status, last error and update time")
    xds_status.add_argument("--json", action="store_true", help="print mesh.xds_status() as JSON")
    xds_status.set_defaults(handler=_xds_status)
    return parser


# ----------------------------------------------------------------- subcommands


def _demo(args: argparse.Namespace) -> int:
    quiet_grpc_core()
    if args.mtls:
        from .demo.mtls import run_mtls_demo

        res = run_mtls_demo(args.duration, out=sys.stdout, live=False if args.no_live else None)
        return EXIT_INTERRUPTED if res.interrupted else 0
    if args.registry:
        from .demo.registry import run_registry_demo

        res = run_registry_demo(args.registry, args.duration, out=sys.stdout, live=False if args.no_live else None)
        return EXIT_INTERRUPTED if res.interrupted else 0
    from .demo import run_demo

    result = run_demo(
        args.duration,
        agents=args.agents,
        concurrency=args.concurrency,
        lb_policy=args.lb_policy,
        out=sys.stdout,
        live=False if args.no_live else None,
        grpc=args.grpc,
    )
    return EXIT_INTERRUPTED if result.interrupted else 0


def quiet_grpc_core() -> None:
    """Keep gRPC core's own log lines (``chttp2_transport.cc ... Got goaway``,
    written straight to the process's stderr at INFO, and any tracer's) off
    the demo's screen: the demo's agents come and go on purpose. gRPC core
    reads these variables once, when ``grpc`` is first imported, so this runs
    before the demo imports it."""
    os.environ["GRPC_VERBOSITY"] = "NONE"
    os.environ["GRPC_TRACE"] = ""


def _config_docs(args: argparse.Namespace) -> int:
    try:
        from .config import render_markdown  # type: ignore[attr-defined]
    except ImportError:
        print("meshlib config-docs: this meshlib has no meshlib.config.render_markdown() yet", file=sys.stderr)
        return 1
    text = render_markdown()
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from .config.check import check

    return check(os.environ, sys.stdout, sys.stderr, show_all=args.all)


def _endpoints(args: argparse.Namespace) -> int:
    from ._table import format_table
    from .mesh import Mesh

    with Mesh.from_env() as mesh:
        snapshot = mesh.endpoints(args.service)
    source = snapshot.source or "unknown source"
    print(f"service {snapshot.service}: {len(snapshot)} endpoint{'' if len(snapshot) == 1 else 's'} ({source}, version {snapshot.version})")
    if len(snapshot):
        rows = [
            (
                ep.address,
                str(ep.weight),
                ep.zone or "-",
                str(ep.priority),
                "healthy" if ep.healthy else "unhealthy",
                ",".join(ep.tags) or "-",
                ",".join(f"{k}={v}" for k, v in ep.metadata.items()) or "-",
            )
            for ep in snapshot
        ]
        for line in format_table(("address", "weight", "zone", "priority", "health", "tags", "metadata"), rows, "<><><<<"):
            print(line)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from .mesh import Mesh

    if args.url:
        from .admin import fetch_stats

        try:
            text = fetch_stats(args.url, prometheus=args.prometheus)
        except (OSError, ValueError) as exc:
            print(f"meshlib: cannot read the admin endpoint at {args.url}: {exc} (is MESHLIB_ADMIN set in that process?)", file=sys.stderr)
            return 1
        print(text, end="" if text.endswith("\n") else "\n")
        return 0

    with Mesh.from_env() as mesh:
        stats = mesh.stats()
    print(json.dumps(stats, indent=2, default=str))
    return 0


def _xds_status(args: argparse.Namespace) -> int:
    import time

    from ._table import format_table
    from .mesh import Mesh

    with Mesh.from_env() as mesh:
        status = mesh.xds_status()
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    if not status.get("enabled"):
        print("xDS is not in use: set MESHLIB_DISCOVERY=xds (or a service's XDS_LISTENER) and an xDS bootstrap", file=sys.stderr)
        return EXIT_USAGE
    state = "connected" if status["connected"] else "not connected"
    print(f"xds server {status['server']} ({state}), node {status['node'] or '-'}")
    rows = [
        (r["type"], r["name"], r["version"] or "-", r["status"] + (" (deleted by server)" if r["deleted_by_server"] else ""),
         time.strftime("%H:%M:%S", time.localtime(r["last_updated"])) if r["last_updated"] else "-", r["error"] or "-")
        for r in status["resources"]
    ]  # fmt: skip
    for line in format_table(("type", "name", "version", "status", "updated", "last error"), rows, "<<<<<<"):
        print(line)
    return 0


# ----------------------------------------------------------------- argument types


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range: {lo} to {hi}")
        return value

    return parse


def _policies() -> str:
    from . import config

    return ", ".join(getattr(config, "LB_POLICIES", ())) or "see docs/configuration.md"
