"""Logging and tracing of one praefect process started from the CLI."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from praefect.settings import Config


@contextlib.contextmanager
def process_telemetry(role: str, settings: Config) -> Iterator[None]:
    """Configure logs and tracing for ``role``; flush the spans on the way out.

    A tracing setting that cannot work exits with status 2 and says why.
    """
    # Imported here: `praefect serve` forks its workers before any gRPC
    # object may exist, and the telemetry modules import grpc.
    from praefect.core.telemetry import configure_logging, configure_tracing, shutdown_tracing
    from praefect.core.telemetry.tracing import TracingConfigError

    configure_logging(settings.logging.format, settings.logging.level)
    try:
        configure_tracing(role, settings.tracing)
    except TracingConfigError as error:
        click.echo(f"praefect: tracing settings: {error}", err=True)
        raise SystemExit(2) from error
    try:
        yield
    finally:
        shutdown_tracing()
