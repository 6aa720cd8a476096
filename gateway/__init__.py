"""praefect.gateway: git smart HTTP in front of the router.

`praefect gateway` serves git clone, fetch and push over HTTP and turns each
request into a SmartHTTPService call to the router (docs/gateway.md).

    config.py   GatewayConfig, read_secret_file
    server.py   GatewayServer: lifecycle (startup, serve, shutdown)
    app.py      the aiohttp application
    git_http.py the smart-HTTP endpoints and the streaming relay
    router.py   RouterClient: signed SmartHTTPService/RepositoryService calls
    paths.py    repository paths from URLs
    auth.py     HTTP basic authentication
    body.py     request bodies, gzip
    errors.py   gRPC errors as HTTP answers
"""
