"""Schemathesis against GET /openapi.json: every documented operation, fuzzed from its schema,
answers without a server error and as documented.

Should the app not serve the document (it came from another branch), the test is skipped with
the reason rather than failing. Schemathesis' own pytest loader
(`schemathesis.pytest.from_fixture`) fails under pytest 9 (it sets `Function._nodeid`), so the
operations are driven here with Hypothesis directly, which is all that loader does.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import given, settings

from .conftest import make_config
from .live import LiveServer, live_server

EXAMPLES_PER_OPERATION = 25
# A schema cannot say which phone numbers exist, so "schema-valid but refused" (422) is expected.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


def check_operations(server: LiveServer) -> int:
    """Fuzz every operation of the served document; returns how many were checked."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION)
        def conforms(case: Any) -> None:
            case.call_and_validate(excluded_checks=EXCLUDED)

        conforms()
        checked += 1
    return checked


def test_api_conforms_to_its_openapi_document(database_url: str) -> None:
    with live_server(make_config(database_url), database_url) as server:
        response = requests.get(f"{server.url}/openapi.json", timeout=10)
        if response.status_code != 200:
            pytest.skip(f"the app does not serve /openapi.json yet (GET -> {response.status_code})")
        assert check_operations(server) > 0
