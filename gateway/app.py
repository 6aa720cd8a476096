"""The gateway's aiohttp application: one handler for every URL.

git's smart-HTTP URLs are `<repository path>/<endpoint>` with a repository
path of any depth, so a single catch-all route hands every request to
`GitHttpHandler`, which checks the credentials and the path itself.
"""

from __future__ import annotations

from aiohttp import web

from praefect.gateway.config import GatewayConfig
from praefect.gateway.git_http import GitHttpHandler, add_no_cache_headers
from praefect.gateway.router import RouterClient

#: access log line: client, request line, status, bytes sent, the encoding
#: and protocol git asked for, and seconds taken
ACCESS_LOG_FORMAT = '%a "%r" %s %b encoding="%{Content-Encoding}i" protocol="%{Git-Protocol}i" %Tf'


def make_app(config: GatewayConfig, router: RouterClient) -> web.Application:
    app = web.Application()
    handler = GitHttpHandler(config, router)
    app.router.add_route("*", "/{path:.*}", handler.handle)
    app.on_response_prepare.append(add_no_cache_headers)
    return app
