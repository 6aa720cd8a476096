"""The in-memory cluster view and the default routing plugin that reads it."""

from __future__ import annotations

import pytest

from praefect.core.call import Call, RepositoryRef
from praefect.core.cluster import Cluster, UnknownVirtualStorage, VirtualStorage
from praefect.core.errors import Unavailable
from praefect.core.registry import default_registry
from praefect.core.routing_types import NodeRef, RouteDecision
from praefect.plugins.routing import route

A, B, C = (NodeRef("praefect", name, f"tcp://127.0.0.1:900{i}") for i, name in enumerate(("a", "b", "c")))


@pytest.fixture
def cluster() -> Cluster:
    return Cluster([VirtualStorage("praefect", (A, B, C), A)])


def call_of(method: str, path: str = "repo.git") -> Call:
    call = Call(default_registry()[method], (), router=None)  # type: ignore[arg-type, unused-ignore]
    call.repository = RepositoryRef("praefect", path)
    return call


def test_unknown_virtual_storage_names_the_known_ones(cluster: Cluster) -> None:
    with pytest.raises(UnknownVirtualStorage) as caught:
        cluster.virtual_storage("other")
    assert str(caught.value) == "unknown virtual storage 'other': this router serves 'praefect'"


def test_primary_override(cluster: Cluster) -> None:
    assert cluster.primary("praefect", "repo.git") == A
    cluster.set_primary("praefect", "repo.git", "b")
    assert cluster.primary("praefect", "repo.git") == B
    assert cluster.replicas("praefect", "repo.git") == (A, C)
    assert cluster.primary("praefect", "other.git") == A
    cluster.clear_primary("praefect", "repo.git")
    assert cluster.primary("praefect", "repo.git") == A
    with pytest.raises(KeyError):
        cluster.set_primary("praefect", "repo.git", "nope")


def test_health_flags(cluster: Cluster) -> None:
    assert cluster.healthy_nodes("praefect") == (A, B, C)
    assert cluster.set_healthy(B, False) is True
    assert cluster.set_healthy(B, False) is False
    assert cluster.healthy_nodes("praefect") == (A, C)


def test_mutators_go_to_the_primary_with_the_rest_as_replicas(cluster: Cluster) -> None:
    decision = route(call_of("/gitaly.RepositoryService/CreateRepository"), cluster)
    assert decision == RouteDecision(node=A, replicas=(B, C), reason="mutator: primary")


def test_accessors_go_to_the_primary(cluster: Cluster) -> None:
    cluster.set_primary("praefect", "repo.git", "c")
    decision = route(call_of("/gitaly.RepositoryService/RepositoryExists"), cluster)
    assert decision is not None and decision.node == C and decision.replicas == ()


def test_maintenance_goes_to_every_healthy_node(cluster: Cluster) -> None:
    cluster.set_healthy(C, False)
    decision = route(call_of("/gitaly.RepositoryService/OptimizeRepository"), cluster)
    assert decision is not None and decision.nodes == (A, B)
    cluster.set_healthy(A, False)
    decision = route(call_of("/gitaly.RepositoryService/OptimizeRepository"), cluster)
    assert decision is not None and decision.nodes == (B,)


def test_a_down_primary_is_unavailable(cluster: Cluster) -> None:
    cluster.set_healthy(A, False)
    with pytest.raises(Unavailable, match=r"the primary of praefect:repo.git, a \(tcp://127.0.0.1:9000\), is down"):
        route(call_of("/gitaly.RepositoryService/CreateRepository"), cluster)
