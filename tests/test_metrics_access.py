"""Who may read /notifications/metrics: the bearer token, staff, and direct loopback clients only
while no token is set (notifications.metrics.allowed; docs/security.md)."""

from __future__ import annotations

import pytest
from django.test import Client

from notifications.checks import check_settings

pytestmark = pytest.mark.django_db

URL = "/notifications/metrics"
TOKEN = "t0k3n-" + "x" * 40


@pytest.mark.parametrize("header", ["HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP"])
def test_loopback_with_a_forwarding_header_is_refused(header):
    # What daphne --proxy-headers turns a forged "X-Forwarded-For: 127.0.0.1" into.
    value = "for=127.0.0.1" if header == "HTTP_FORWARDED" else "127.0.0.1"
    assert Client(REMOTE_ADDR="127.0.0.1", **{header: value}).get(URL).status_code == 403


def test_loopback_without_forwarding_headers_is_allowed_while_no_token_is_set():
    assert Client(REMOTE_ADDR="127.0.0.1").get(URL).status_code == 200


def test_a_token_replaces_the_loopback_allowance(settings):
    settings.NOTIFICATIONS_METRICS_TOKEN = TOKEN
    assert Client(REMOTE_ADDR="127.0.0.1").get(URL).status_code == 403


@pytest.mark.parametrize("address", ["203.0.113.9", "127.0.0.1"])
def test_the_right_bearer_token_opens_it_from_anywhere(settings, address):
    settings.NOTIFICATIONS_METRICS_TOKEN = TOKEN
    response = Client(REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR="198.51.100.1").get(
        URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
    )
    assert response.status_code == 200 and "notifications_open_streams" in response.content.decode()


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer ", ""],
)
def test_a_wrong_or_malformed_token_is_refused(settings, authorization):
    settings.NOTIFICATIONS_METRICS_TOKEN = TOKEN
    assert Client(REMOTE_ADDR="203.0.113.9").get(URL, HTTP_AUTHORIZATION=authorization).status_code == 403


def test_bearer_scheme_is_case_insensitive(settings):
    settings.NOTIFICATIONS_METRICS_TOKEN = TOKEN
    assert Client().get(URL, HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200


def test_a_bearer_header_means_nothing_without_a_configured_token():
    assert Client(REMOTE_ADDR="203.0.113.9").get(URL, HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_staff_sessions_still_read_it_with_a_token_set(settings, staff):
    settings.NOTIFICATIONS_METRICS_TOKEN = TOKEN
    client = Client(REMOTE_ADDR="203.0.113.9")
    client.force_login(staff)
    assert client.get(URL).status_code == 200


@pytest.mark.parametrize("value", ["", " padded ", 12345, b"bytes"])
def test_check_refuses_a_bad_token(settings, value):
    settings.NOTIFICATIONS_METRICS_TOKEN = value
    assert [m.id for m in check_settings()] == ["notifications.E020"]


def test_check_warns_about_a_short_token(settings):
    settings.NOTIFICATIONS_METRICS_TOKEN = "short"
    assert [m.id for m in check_settings()] == ["notifications.W020"]


@pytest.mark.parametrize("value", [None, TOKEN])
def test_check_accepts_none_and_a_long_token(settings, value):
    settings.NOTIFICATIONS_METRICS_TOKEN = value
    assert check_settings() == []
