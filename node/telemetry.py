"""The node's share of tracing and logs.

- every call: a server span continuing the router's trace (its client span
  arrives as ``traceparent`` metadata), with the request's storage and
  relative path, and one access-log line (the shared
  :class:`~praefect.core.telemetry.calls.TelemetryInterceptor`);
- every git process: a span, child of the call's span, from spawn to reap,
  with the subcommand, the arguments (absolute paths hidden), pid and exit
  code;
- the process: ``praefect node serve`` installs the tracer provider
  (service ``praefect-node``) and the log format in :func:`setup_node_process`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from praefect.core import __version__
from praefect.core.telemetry.calls import CallRecord, CallTelemetry, TelemetryInterceptor
from praefect.core.telemetry.logs import configure_logging
from praefect.core.telemetry.tracing import configure_tracing, shutdown_tracing, tracing_active
from praefect.node import git
from praefect.settings import TracingConfig

__all__ = [
    "git_process_span",
    "node_interceptor",
    "observe_git_processes",
    "setup_node_process",
]


def _describe_request(record: CallRecord, request: Any) -> None:
    """The storage and relative path of a request with a ``repository`` field."""
    try:
        if not request.HasField("repository"):
            return
    except (AttributeError, ValueError):  # not a message, or no such field
        return
    repository = request.repository
    record.storage = repository.storage_name
    record.relative_path = repository.relative_path
    span = record.span
    if span is not None and span.is_recording():
        span.set_attributes(
            {"praefect.storage": record.storage, "praefect.relative_path": record.relative_path}
        )


def node_interceptor() -> TelemetryInterceptor:
    """The node's call observation; first in the server's interceptors."""
    return TelemetryInterceptor(CallTelemetry("node", describe_request=_describe_request))


def _subcommand(args: Sequence[str]) -> str:
    """``upload-pack`` of ``-c k=v upload-pack --stateless-rpc .``."""
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
        elif arg in ("-c", "-C", "--git-dir", "--work-tree", "--namespace"):
            skip_next = True
        elif not arg.startswith("-"):
            return arg
    return ""


def _shown(arg: str) -> str:
    # Storage paths are absolute; traces leave the node, the paths must not.
    return "<path>" if arg.startswith("/") or "=/" in arg else arg


@contextlib.contextmanager
def git_process_span(process: git.GitProcessInfo) -> Iterator[None]:
    """A span from a git process's spawn to its reap, child of the current span.

    Only inside a traced call: git run at startup or by background work
    would otherwise start a trace of its own per process.
    """
    if not tracing_active() or not trace.get_current_span().get_span_context().is_valid:
        yield
        return
    subcommand = _subcommand(process.args)
    span = trace.get_tracer("praefect.node.git", __version__).start_span(
        f"git {subcommand}".rstrip(),
        kind=SpanKind.INTERNAL,
        attributes={
            "git.subcommand": subcommand,
            "git.args": [_shown(arg) for arg in process.args],
        },
    )
    try:
        yield
    except BaseException as error:
        span.set_attribute("error.type", type(error).__name__)
        raise
    finally:
        if span.is_recording():
            if process.pid is not None:
                span.set_attribute("process.pid", process.pid)
            if process.returncode is not None:
                span.set_attribute("process.exit_code", process.returncode)
        span.end()


def observe_git_processes() -> None:
    """Give every git process of this node a span (idempotent)."""
    git.set_process_observer(git_process_span)


def setup_node_process(
    tracing: TracingConfig | None = None, log_format: str | None = None
) -> Callable[[], None]:
    """Process-wide telemetry of ``praefect node serve``; returns the cleanup.

    Logs keep the level the command set and get ``log_format`` (text by
    default) with trace ids; tracing follows ``tracing`` and the OTEL_*
    variables (service ``praefect-node``). Call the cleanup at exit: it
    exports the spans still queued.
    """
    configure_logging(log_format or "text")
    configure_tracing("node", tracing)
    cleanup: Callable[[], None] = shutdown_tracing
    return cleanup
