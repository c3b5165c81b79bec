"""The REST API's routers, one module per resource (docs/server-api.md describes them)."""
