"""deploy/failover.py, the client of `make compose-test`: which answers it retries, which it counts as failed
(the test itself runs against two real replicas in .ci/run: make compose-test)."""
import sys

import httpx
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "deploy"))
import failover  # noqa: E402

OK = {"gender": "male", "rating": 3.1}


def _client(answers: list) -> tuple[httpx.Client, list]:
    seen = []

    def handler(request):
        seen.append(request)
        a = answers[len(seen) - 1]
        if isinstance(a, Exception):
            raise a
        status, body = a
        return httpx.Response(status, json=body)

    return httpx.Client(transport=httpx.MockTransport(handler)), seen


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(failover.time, "sleep", lambda s: None)


def test_a_stopped_replicas_connection_error_and_503_are_retried_until_a_valid_answer():
    client, seen = _client([httpx.ConnectError("refused"), (503, {"error": "busy"}), (200, OK)])
    assert failover.one(client, "http://lb/predict", b"jpeg") == {"status": 200, "tries": 3, "error": None}
    assert len(seen) == 3


def test_a_client_error_is_not_retried_and_counts_as_failed():
    client, seen = _client([(400, {"error": "unusable image"})])
    out = failover.one(client, "http://lb/predict", b"jpeg")
    assert out["status"] == 400 and out["tries"] == 1 and "unusable image" in out["error"] and len(seen) == 1


def test_three_overloaded_answers_fail_and_a_200_with_a_wrong_body_fails_too():
    client, _ = _client([(503, {}), (502, {}), (504, {})])
    assert failover.one(client, "http://lb/predict", b"jpeg") == {"status": 504, "tries": 3, "error": "status 504"}
    client, _ = _client([(200, {"gender": "cat", "rating": 9})])
    assert failover.one(client, "http://lb/predict", b"jpeg")["error"].startswith("bad answer")
