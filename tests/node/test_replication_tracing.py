"""ReplicateRepository seen through its spans: the source's upload-pack joins
the replication's trace, one SSHUploadPack call per replication, and an
up-to-date target runs no fetch."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from praefect.core.telemetry import inject_trace_context
from tests.support.gitenv import git, make_work_repo
from tests.support.replication_pair import NodePair, node_pair
from tests.support.router import wait_until
from tests.support.telemetry import Spans, in_memory_tracing

tracer = trace.get_tracer("tests.replication")

REPLICATE = "gitaly.RepositoryService/ReplicateRepository"
UPLOAD_PACK = "gitaly.SSHService/SSHUploadPack"


async def replicate_traced(exporter: InMemorySpanExporter, nodes: NodePair, path: str) -> tuple[Spans, trace.SpanContext]:
    """Replicate `path` under a caller's span, as a router's replay does; the
    spans once both nodes' calls have ended."""
    exporter.clear()
    with tracer.start_as_current_span("replay event") as caller:
        await nodes.replicate(path, extra_metadata=tuple(inject_trace_context().items()))
    await wait_until(
        lambda: len(Spans.from_exporter(exporter).named(UPLOAD_PACK)) >= 1
        and len(Spans.from_exporter(exporter).named(REPLICATE)) == 1,
        "the spans of both calls",
    )
    return Spans.from_exporter(exporter), caller.get_span_context()


async def test_the_source_upload_pack_runs_in_the_trace_of_the_replication(tmp_path: Path) -> None:
    with in_memory_tracing() as exporter:
        async with node_pair(tmp_path / "nodes") as nodes:
            nodes.seed_source("project.git", make_work_repo(tmp_path / "work", commits=2))

            spans, caller = await replicate_traced(exporter, nodes, "project.git")

    replicate = spans.one(REPLICATE)
    assert replicate.trace_id == format(caller.trace_id, "032x")
    assert replicate.attributes["praefect.storage"] == "storage-b"
    upload_pack = spans.one(UPLOAD_PACK)
    assert upload_pack.kind == "SERVER"
    assert upload_pack.trace_id == replicate.trace_id, spans.describe()
    assert upload_pack.parent_span_id == replicate.span_id, spans.describe()
    assert [span.name for span in spans.children(upload_pack)] == ["git upload-pack"]
    # Everything the target asked the source travelled in that one call.
    assert not spans.named("gitaly.RepositoryService/ObjectFormat")
    target_git = [span.name for span in spans.children(replicate)]
    assert "git fetch" in target_git, target_git


async def test_an_up_to_date_target_runs_no_fetch(tmp_path: Path) -> None:
    with in_memory_tracing() as exporter:
        async with node_pair(tmp_path / "nodes") as nodes:
            nodes.seed_source("project.git", make_work_repo(tmp_path / "work", commits=2))
            await nodes.replicate("project.git")
            refs_before = git(["for-each-ref"], cwd=nodes.root_b / "project.git")

            spans, _ = await replicate_traced(exporter, nodes, "project.git")

            assert git(["for-each-ref"], cwd=nodes.root_b / "project.git") == refs_before
    replicate = spans.one(REPLICATE)
    upload_pack = spans.one(UPLOAD_PACK)
    children = sorted(span.name for span in spans.children(replicate))
    assert children == ["git for-each-ref", UPLOAD_PACK], spans.describe()
    # upload-pack answered the listing and ended when told to: not cancelled.
    assert upload_pack.status != "ERROR", upload_pack.attributes
    (upload_pack_process,) = spans.children(upload_pack)
    assert upload_pack_process.attributes["process.exit_code"] == 0
