"""The OpenAPI document is the contract: an API fuzzer driven by it (schemathesis) finds no server
error, no undocumented status code and no response that breaks its schema, on every operation.
Every request carries a valid key, so that invalid ones reach validation rather than stopping at
authentication.
Valid and invalid requests alike, a fixed number of each per operation (bounded), against real
PostgreSQL."""

from __future__ import annotations

import itertools
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks

from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.store import TimerStore

EXAMPLES_PER_OPERATION = 40


CONTRACT_CHECKS = [
    schemathesis.checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def test_every_operation_keeps_its_documented_contract(
    store: TimerStore, database_url: str
) -> None:
    app = create_app(Settings(database_url=database_url, api_key=API_KEY), store=store)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 20  # 12 of /timers and the rest, 8 of /schedules
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def keeps_its_contract(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CONTRACT_CHECKS)

        try:
            keeps_its_contract()
        except Unsatisfiable:
            # Nothing to get wrong: the operation takes no parameters or body (GET /health).
            assert (
                mode is GenerationMode.NEGATIVE
                and not operation.body
                and not (operation.path_parameters or operation.query)
            ), operation.label


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
