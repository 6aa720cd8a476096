"""praefect-example: a third-party plugin as the test suite installs it.

- ``authenticate``: a call carrying ``x-example-api-key: example-key`` is
  admitted as the ``example-robot`` without a router token; any other value
  of that header is rejected with PERMISSION_DENIED.
- ``route``: an accessor carrying ``x-example-route-to: NODE`` goes to that
  node of its virtual storage instead of the primary.

Without those headers the plugin returns None and the default plugins decide.
"""

from __future__ import annotations

from praefect.core import hookimpl
from praefect.core.call import Call, Identity
from praefect.core.cluster import Cluster
from praefect.core.errors import InvalidArgument, PermissionDenied
from praefect.core.methods import Operation
from praefect.core.routing_types import RouteDecision

__version__ = "0.1.0"

API_KEY_HEADER = "x-example-api-key"
API_KEY = "example-key"
ROUTE_HEADER = "x-example-route-to"


@hookimpl
def authenticate(call: Call) -> Identity | None:
    key = call.header(API_KEY_HEADER)
    if key is None:
        return None
    if key != API_KEY:
        raise PermissionDenied(f"{API_KEY_HEADER}: unknown API key")
    return Identity(subject="example-robot", scheme="api-key")


@hookimpl
def route(call: Call, cluster: Cluster) -> RouteDecision | None:
    wanted = call.header(ROUTE_HEADER)
    if not isinstance(wanted, str) or call.method.operation is not Operation.ACCESSOR:
        return None
    assert call.virtual_storage is not None
    storage = cluster.virtual_storage(call.virtual_storage)
    try:
        node = storage.node(wanted)
    except KeyError:
        names = ", ".join(node.name for node in storage.nodes)
        raise InvalidArgument(f"{ROUTE_HEADER}: no node {wanted!r} in {storage.name!r} (nodes: {names})") from None
    return RouteDecision(node=node, reason=f"{ROUTE_HEADER} header")
