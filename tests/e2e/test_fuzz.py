"""Schema-driven fuzzing of the adapter (issue 13.6): schemathesis generates requests from the
adapter's own OpenAPI document for every documented route and sends them to the real adapter
process (predictor: the sine-wave double, so that generations are instant). No response may be a
5xx or disagree with the documented status codes, content types and body schemas.

Bounded for `make test` (a fixed example count per route and a fixed seed); `make fuzz` runs the
same test deeper (FUZZ_EXAMPLES, FUZZ_SEED)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as fixed_seed
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.servers import make_audio, start_adapter, start_fake_predictor

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
SEED = int(os.environ.get("FUZZ_SEED", "1313"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def adapter_url(tmp_path_factory):
    voices = tmp_path_factory.mktemp("fuzz-voices")
    (voices / "alice.wav").write_bytes(make_audio(3.0))
    logs = tmp_path_factory.mktemp("fuzz-logs")
    fake = start_fake_predictor(voices, logs)
    # Enough slots that a fast run is never refused for being busy (429 is documented anyway).
    adapter = start_adapter(fake.url, voices, logs, MAX_CONCURRENT_REQUESTS="8")
    try:
        yield adapter.url
    finally:
        adapter.stop()
        fake.stop()


def test_every_documented_route_answers_within_its_schema(adapter_url):
    # schemathesis' pytest plugin does not load under this pytest; its strategies run under hypothesis directly.
    schema = schemathesis.openapi.from_url(f"{adapter_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6, [op.label for op in operations]
    failures: dict[str, str] = {}
    calls = 0

    for operation in operations:

        @given(case=operation.as_strategy())
        @fixed_seed(SEED)
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case):
            nonlocal calls
            calls += 1
            case.call_and_validate(checks=CHECKS, timeout=60)

        try:
            run()
        except Exception as exc:  # one failure per route, all routes run
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:2000]
    print(f"fuzz: {len(operations)} routes, {calls} requests, {len(failures)} failing routes (seed {SEED})")
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
