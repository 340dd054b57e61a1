"""The OpenAPI document is the contract (tests/support/openapi.py): every operation, on the in-memory
store (the schedules' again on PostgreSQL: tests/integration/test_openapi_schedules.py)."""

from __future__ import annotations

from tests.support.openapi import keeps_its_contract
from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.testing import InMemoryStore


def test_every_operation_keeps_its_documented_contract(
    store: InMemoryStore, database_url: str
) -> None:
    app = create_app(Settings(database_url=database_url, api_key=API_KEY), store=store)
    checked = keeps_its_contract(app, lambda path: True)
    assert checked == 20  # /timers and the rest (12), /schedules (8)


def test_the_document_names_the_key_and_every_error_it_answers() -> None:
    from timers.testing import InMemoryStore

    document = create_app(Settings(api_key=API_KEY), store=InMemoryStore()).openapi()
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = set(operation["responses"])
            assert "422" not in responses, (method, path)
            assert "500" in responses, (method, path)
            if path not in ("/health", "/healthz", "/metrics"):  # open to probes and scrapers
                assert {"400", "401"} <= responses, (method, path)
                assert operation["security"] == [{"APIKeyHeader": []}], (method, path)
    create = document["paths"]["/timers"]["post"]["requestBody"]["content"]["application/json"]
    body = document["components"]["schemas"][create["schema"]["$ref"].rsplit("/", 1)[1]]
    assert body["additionalProperties"] is False
