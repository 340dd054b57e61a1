"""The OpenAPI contract check shared by the unit suite (the in-memory store) and the integration
suite (the schedules again, on PostgreSQL): an API fuzzer driven by the document
(schemathesis) finds no server error, no undocumented status code and no response that breaks its
schema. Every request carries a valid key, so that invalid ones reach validation rather than
stopping at authentication. Valid and invalid requests alike, a fixed number of each per operation
(bounded)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks

from tests.support.services import API_KEY

EXAMPLES_PER_OPERATION = 40

CONTRACT_CHECKS = [
    schemathesis.checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def keeps_its_contract(app: FastAPI, wanted: Callable[[str], bool]) -> int:
    """Fuzz every operation whose path is `wanted`; how many there were."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    operations = [operation for operation in operations if wanted(operation.path)]
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CONTRACT_CHECKS)

        try:
            check()
        except Unsatisfiable:
            # Nothing to get wrong: the operation takes no parameters or body (GET /health).
            assert (
                mode is GenerationMode.NEGATIVE
                and not operation.body
                and not (operation.path_parameters or operation.query)
            ), operation.label
    return len(operations)
