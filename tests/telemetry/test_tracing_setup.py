"""The tracer provider from settings and OTEL_* variables, exporting for real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import TracerProvider

from praefect.core.telemetry.tracing import (
    TracingConfigError,
    build_tracer_provider,
    plan_tracing,
)
from praefect.settings import TracingConfig
from tests.support.telemetry import otlp_receiver

OTEL_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def tracing(**changes: object) -> TracingConfig:
    values: dict[str, object] = {
        "exporter": "none",
        "endpoint": "",
        "protocol": "grpc",
        "service_name": "praefect",
        "sample_ratio": 1.0,
    }
    values.update(changes)
    return TracingConfig(**values)  # type: ignore[arg-type, unused-ignore]


def provider_for(role: str, settings: TracingConfig) -> TracerProvider:
    provider: TracerProvider | None = build_tracer_provider(plan_tracing(role, settings))
    assert provider is not None
    return provider


def test_nothing_is_installed_by_default() -> None:
    plan = plan_tracing("router", tracing(), environ={})
    assert plan.exporters == ()
    assert build_tracer_provider(plan) is None


def test_a_changed_setting_wins_and_a_default_one_defers_to_the_environment() -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    from_env = plan_tracing("node", tracing(), environ=env)
    assert from_env.exporters == ("console",) and from_env.protocol == "http"
    from_settings = plan_tracing("node", tracing(exporter="otlp", protocol="http"), environ=env)
    assert from_settings.exporters == ("otlp",) and from_settings.protocol == "http"
    both = plan_tracing("node", tracing(), environ={"OTEL_TRACES_EXPORTER": "otlp, console,none"})
    assert both.exporters == ("otlp", "console")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin: praefect exports spans with otlp or console"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "speaks grpc or http/protobuf"),
    ],
)
def test_unsupported_choices_say_what_is_supported(env: dict[str, str], message: str) -> None:
    with pytest.raises(TracingConfigError, match=message):
        plan_tracing("router", tracing(), environ=env)


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown process role 'proxy'"):
        plan_tracing("proxy")


def test_each_process_names_itself_unless_the_environment_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    console = tracing(exporter="console")
    assert provider_for("replicate", console).resource.attributes["service.name"] == "praefect-replicate"
    assert provider_for("node", tracing(exporter="console", service_name="eu")).resource.attributes[
        "service.name"
    ] == "eu-node"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,deployment.environment=test")
    attributes = provider_for("router", console).resource.attributes
    assert attributes["service.name"] == "from-attributes"
    assert attributes["deployment.environment"] == "test"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-service-name")
    assert provider_for("router", console).resource.attributes["service.name"] == "from-service-name"


def test_sample_ratio_drops_new_traces_but_follows_a_sampled_parent() -> None:
    provider = provider_for("router", tracing(exporter="console", sample_ratio=0.0))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("root") as root:
        assert not root.is_recording()
    sampled_parent = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    parent = trace.set_span_in_context(trace.NonRecordingSpan(sampled_parent))
    with tracer.start_as_current_span("child", context=parent) as child:
        assert child.is_recording()
    provider.shutdown()


def test_console_exporter_prints_spans(capsys: pytest.CaptureFixture[str]) -> None:
    provider = provider_for("node", tracing(exporter="console"))
    with provider.get_tracer("test").start_as_current_span("printed span"):
        pass
    provider.shutdown()
    assert '"name": "printed span"' in capsys.readouterr().out


async def test_otlp_grpc_export_from_settings_reaches_a_collector() -> None:
    async with otlp_receiver() as receiver:
        provider = provider_for("replicate", tracing(exporter="otlp", endpoint=f"http://{receiver.address}"))
        with provider.get_tracer("test").start_as_current_span("exported"):
            pass
        # the export runs in the processor's thread; the receiver needs this loop
        await asyncio.to_thread(provider.shutdown)
        spans = await receiver.wait_for(lambda s: s.named("exported"), "the exported span")
    (span,) = spans.named("exported")
    assert span.service == "praefect-replicate"


@pytest.fixture
async def http_collector() -> AsyncIterator[tuple[str, list[trace_service_pb2.ExportTraceServiceRequest]]]:
    """An OTLP/HTTP receiver: POST /v1/traces with a protobuf body."""
    received: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def export(request: web.Request) -> web.Response:
        received.append(trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read()))
        body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", received
    finally:
        await runner.cleanup()


async def test_otlp_http_export_appends_the_traces_path(
    http_collector: tuple[str, list[trace_service_pb2.ExportTraceServiceRequest]],
) -> None:
    base_url, received = http_collector
    provider = provider_for("router", tracing(exporter="otlp", protocol="http", endpoint=base_url))
    with provider.get_tracer("test").start_as_current_span("over http"):
        pass
    await asyncio.to_thread(provider.shutdown)
    names = [
        span.name
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert names == ["over http"]
