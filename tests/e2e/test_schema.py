"""schemathesis against Chorus's own OpenAPI schema: every route, with and without a key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.server import Server, running_server

pytestmark = pytest.mark.slow

KEY = "schema-test-key"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def server(tiny_vits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CHORUS_MODEL": str(tiny_vits_dir), "API_KEY": KEY, "CHORUS_MAX_TEXT_CHARS": "300"}
    with running_server(tmp_path_factory.mktemp("schema"), env) as running:
        yield running


def _check_every_operation(server: Server, headers: dict[str, str], examples: int) -> int:
    # Driven by hand rather than through schemathesis's pytest plugin, which does not load under pytest 9.
    schema = schemathesis.openapi.from_url(server.url + "/schema/openapi.json", headers={"X-API-Key": KEY})
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()
        checked += 1
    return checked


def test_every_answer_with_a_key_conforms_and_none_is_a_5xx(server: Server) -> None:
    assert _check_every_operation(server, {"X-API-Key": KEY}, examples=40) >= 6


def test_every_answer_without_a_key_conforms(server: Server) -> None:
    assert _check_every_operation(server, {}, examples=10) >= 6


def test_the_word_timed_answer_of_generate_is_documented(server: Server) -> None:
    """Found by the test above (ST105): with timestamps "word" /generate answers JSON, which its 200 did not
    list. Checked here without relying on hypothesis drawing that case."""
    import json
    import urllib.request

    with urllib.request.urlopen(
        urllib.request.Request(server.url + "/schema/openapi.json", headers={"X-API-Key": KEY}), timeout=30
    ) as response:
        documented = json.loads(response.read())["paths"]["/generate"]["post"]["responses"]["200"]["content"]
    request = urllib.request.Request(
        server.url + "/generate",
        data=json.dumps({"text": "hello there", "timestamps": "word"}).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": KEY},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        media = response.headers["Content-Type"].split(";")[0]
        body = json.loads(response.read())
    assert media == "application/json"
    assert media in documented
    assert set(documented[media]["schema"]["required"]) == set(body)
