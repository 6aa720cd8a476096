"""The process's OpenTelemetry tracer provider, from settings and OTEL_* variables.

Each praefect process calls :func:`configure_tracing` once, early, with its
role (``router``, ``node``, ``replicate``). The settings' ``[tracing]``
table and the standard OpenTelemetry environment variables decide:

- a setting changed from its default wins;
- a setting left at its default defers to the variable:
  ``tracing.exporter`` to ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``,
  ``none``), ``tracing.protocol`` to ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``
  (``grpc``, ``http/protobuf``), ``tracing.endpoint`` to
  ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT``, ``tracing.sample_ratio`` to
  ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``;
- ``service.name`` is ``OTEL_SERVICE_NAME``, else ``service.name`` in
  ``OTEL_RESOURCE_ATTRIBUTES``, else ``<tracing.service_name>-<role>``
  (``praefect-router``); ``OTEL_RESOURCE_ATTRIBUTES`` adds attributes.

With no exporter (the default) no provider is installed: the instrumentation
sees :func:`tracing_active` False and skips span work altogether, while the
proxy still forwards the caller's ``traceparent``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

from praefect.core import __version__
from praefect.settings import TracingConfig

__all__ = [
    "ROLES",
    "TracingConfigError",
    "TracingPlan",
    "build_span_processors",
    "build_tracer_provider",
    "configure_tracing",
    "plan_tracing",
    "shutdown_tracing",
    "tracing_active",
]

log = logging.getLogger("praefect.telemetry")

#: the processes that name themselves in ``service.name``
ROLES = ("router", "node", "replicate")
EXPORTERS = ("none", "console", "otlp")
_DEFAULTS = TracingConfig(exporter="none", endpoint="", protocol="grpc", service_name="praefect")

_lock = threading.Lock()
_installed: TracerProvider | None = None


class TracingConfigError(ValueError):
    """The tracing settings or OTEL_* variables ask for something unsupported."""


@dataclass(frozen=True, slots=True)
class TracingPlan:
    """What :func:`configure_tracing` sets up, after settings and environment.

    ``exporters`` is empty for none; ``endpoint`` is ``""`` when the
    exporter reads its own OTEL_* variable (or uses localhost); ``sampler``
    None leaves the choice to the SDK (``OTEL_TRACES_SAMPLER``, else
    parent-based always-on).
    """

    exporters: tuple[str, ...]
    protocol: str
    endpoint: str
    service_name: str | None
    sampler: Sampler | None


def plan_tracing(
    role: str, tracing: TracingConfig | None = None, environ: Mapping[str, str] | None = None
) -> TracingPlan:
    """Resolve ``tracing`` settings against the OTEL_* variables in ``environ``."""
    if role not in ROLES:
        raise ValueError(f"unknown process role {role!r}: use one of {', '.join(ROLES)}")
    env = os.environ if environ is None else environ
    settings = tracing or _DEFAULTS

    if settings.exporter != _DEFAULTS.exporter:
        names = [settings.exporter]
        source = "tracing.exporter"
    else:
        names = [name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "none").split(",")]
        source = "OTEL_TRACES_EXPORTER"
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise TracingConfigError(
            f"{source}={','.join(names)}: praefect exports spans with otlp or console, or none"
        )
    exporters = tuple(dict.fromkeys(name for name in names if name != "none"))

    if settings.protocol != _DEFAULTS.protocol:
        protocol = settings.protocol
    else:
        wanted = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        if wanted.strip().lower() == "grpc":
            protocol = "grpc"
        elif wanted.strip().lower() == "http/protobuf":
            protocol = "http"
        else:
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={wanted}: praefect's OTLP exporter speaks grpc or http/protobuf"
            )

    service_name: str | None = f"{settings.service_name}-{role}"
    if env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        service_name = None  # the SDK's resource detector takes it from the environment

    sampler: Sampler | None = None
    if settings.sample_ratio != 1.0 or not env.get("OTEL_TRACES_SAMPLER"):
        sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
    return TracingPlan(exporters, protocol, settings.endpoint, service_name, sampler)


def build_span_processors(plan: TracingPlan) -> list[SpanProcessor]:
    """One processor per exporter of ``plan``: batched OTLP, immediate console."""
    processors: list[SpanProcessor] = []
    for name in plan.exporters:
        if name == "console":
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
        else:
            processors.append(BatchSpanProcessor(_otlp_exporter(plan)))
    return processors


def _otlp_exporter(plan: TracingPlan) -> SpanExporter:
    # Imported on demand: each exporter pulls in its transport (grpc, requests).
    if plan.protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter(endpoint=_http_traces_url(plan.endpoint) if plan.endpoint else None)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )

    return GrpcExporter(endpoint=plan.endpoint or None)


def _http_traces_url(endpoint: str) -> str:
    """``http://collector:4318`` -> ``http://collector:4318/v1/traces``.

    The same rule as OTEL_EXPORTER_OTLP_ENDPOINT: a base URL gets the traces
    path; a URL with a path is used as it is.
    """
    parts = urllib.parse.urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path="/v1/traces"))
    return endpoint


def build_tracer_provider(plan: TracingPlan) -> TracerProvider | None:
    """A provider exporting as ``plan`` says; None when there is no exporter."""
    if not plan.exporters:
        return None
    attributes: dict[str, str] = {SERVICE_VERSION: __version__}
    if plan.service_name is not None:
        attributes[SERVICE_NAME] = plan.service_name
    provider = TracerProvider(sampler=plan.sampler, resource=Resource.create(attributes))
    for processor in build_span_processors(plan):
        provider.add_span_processor(processor)
    return provider


def configure_tracing(role: str, tracing: TracingConfig | None = None) -> TracerProvider | None:
    """Install this process's tracer provider (once); None when tracing is off.

    Raises :class:`TracingConfigError` for an exporter or protocol praefect
    does not support. A second call returns the provider already installed.
    """
    global _installed
    with _lock:
        if _installed is not None:
            return _installed
        plan = plan_tracing(role, tracing)
        provider = build_tracer_provider(plan)
        if provider is None:
            return None
        trace.set_tracer_provider(provider)
        _installed = provider
    log.info(
        "tracing: %s spans of %s (%s)",
        " and ".join(plan.exporters),
        provider.resource.attributes.get(SERVICE_NAME, "?"),
        plan.protocol,
    )
    return provider


def shutdown_tracing() -> None:
    """Export the spans still queued and stop the exporters (at process exit)."""
    with _lock:
        provider = _installed
    if provider is not None:
        provider.shutdown()


def tracing_active() -> bool:
    """True when a real tracer provider is installed (spans are worth creating)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
