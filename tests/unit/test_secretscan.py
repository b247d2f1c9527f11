"""The suite-wide secret scan (tests/secretscan.py) finds what it must and fails the test."""

from __future__ import annotations

import base64
import textwrap

import pytest

from tests import secretscan
from tests.kube import ROOT
from tests.secretscan import cluster_texts, find_leaks, mask, secret_values

pytest_plugins = ["pytester"]

TOKEN = "hf_abcdefghijklmnopqrstuvwxyz"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_secret_values_skip_identifiers_and_short_values():
    secret = {
        "kind": "Secret",
        "data": {
            "AZURE_CLIENT_SECRET": b64("sp-secret-value-123"),
            "AZURE_CLIENT_ID": b64("00000000-0000-0000-0000-000000000001"),
            "AZURE_TENANT_ID": b64("00000000-0000-0000-0000-000000000002"),
            "flag": b64("true"),
            "pem": b64("-----BEGIN-----\nline-of-key-material\n-----END-----\n"),
            "binary": base64.b64encode(b"\xff\xfe").decode(),
        },
    }
    assert secret_values(secret) == {
        "sp-secret-value-123",
        "-----BEGIN-----\nline-of-key-material\n-----END-----",
        "-----BEGIN-----",
        "line-of-key-material",
        "-----END-----",
    }


def test_cluster_texts_are_statuses_and_events():
    objects = [
        {"kind": "Secret", "metadata": {"name": "hf"}, "data": {"HF_TOKEN": b64(TOKEN)}},
        {
            "kind": "FineTuneJob",
            "metadata": {"name": "xbox"},
            "spec": {"note": TOKEN},  # spec is not scanned: references only
            "status": {"conditions": [{"message": f"token {TOKEN}"}]},
        },
        {
            "kind": "Event",
            "metadata": {"name": "xbox.1"},
            "reason": "Failed",
            "message": "bad",
            "involvedObject": {"kind": "FineTuneJob", "name": "xbox"},
        },
    ]
    texts, secrets = cluster_texts(objects)
    assert secrets == {TOKEN}
    assert set(texts) == {"FineTuneJob/xbox status", "event Failed on FineTuneJob/xbox (xbox.1)"}
    assert find_leaks(texts, secrets) == [f"FineTuneJob/xbox status: {mask(TOKEN)}"]
    assert TOKEN not in mask(TOKEN)


def test_find_leaks_ignores_short_values():
    assert find_leaks({"log": "value is true"}, {"true"}) == []
    assert find_leaks({"log": f"Authorization: Bearer {TOKEN}"}, {TOKEN}) == [f"log: {mask(TOKEN)}"]


def test_remember():
    secretscan.remember("short", "remembered-secret-value")
    assert "remembered-secret-value" in secretscan.remembered()
    assert "short" not in secretscan.remembered()


def test_fixture_fails_a_test_that_logs_or_writes_a_secret(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    pytester.makeconftest("from tests.secretscan import no_leaked_secrets  # noqa: F401\n")
    pytester.makepyfile(
        textwrap.dedent(
            f"""
            import logging
            from tests.secretscan import remember

            def test_logs_it():
                remember("{TOKEN}")
                logging.getLogger("kubetune.x").warning("sent token=%s", "{TOKEN}")

            def test_writes_it(tmp_path):
                remember("{TOKEN}")
                (tmp_path / "operator.log").write_text("Bearer {TOKEN}")

            def test_keeps_it(tmp_path):
                remember("{TOKEN}")
                logging.getLogger("kubetune.x").warning("sent token=<redacted>")
                (tmp_path / "operator.log").write_text("Bearer <redacted>")
            """
        )
    )
    # In its own process: what the inner tests remember and log stays out of this one.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_logs_it*",
            f"*log record 0: {mask(TOKEN)}*",
            "*ERROR at teardown of test_writes_it*",
            f"*log file operator.log: {mask(TOKEN)}*",
        ]
    )
    # The failure names where, never the value itself (pytest's own log capture aside).
    failures = result.stdout.str().split("short test summary")[0]
    assert f"log record 0: {mask(TOKEN)}" in failures
