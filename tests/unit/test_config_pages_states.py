"""Settings, pages and PKCE: small pure pieces with sharp edges."""

from __future__ import annotations

import pytest

from capsule_oauth.config import Settings
from capsule_oauth.errors import ConfigError
from capsule_oauth.web import binding, pages

REQUIRED = {
    "STATE_TABLE_NAME": "states",
    "CONNECTIONS_TABLE_NAME": "connections",
    "TOKEN_KEY_ID": "key",
    "CLIENT_CREDENTIALS_SECRET_ID": "secret",
}


def test_settings_defaults_match_the_documented_ones() -> None:
    settings = Settings.from_env(REQUIRED)

    assert settings.capsule_base_url == "https://api.capsulecrm.com"
    assert settings.scope == "read write"
    assert settings.state_ttl_seconds == 600
    assert settings.pkce_enabled is True
    assert settings.redirect_uri is None
    assert settings.refresh_lead_seconds == 86_400
    assert settings.token_margin_seconds == 300
    assert settings.capsule_hourly_budget == 3600


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_a_missing_required_setting_names_itself(missing: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != missing}

    with pytest.raises(ConfigError, match=missing):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PKCE_ENABLED", "maybe"),
        ("STATE_TTL_SECONDS", "ten"),
        ("REFRESH_CONCURRENCY", "0"),
        ("CAPSULE_BASE_URL", "ftp://capsule"),
        ("CAPSULE_BASE_URL", "http://api.capsulecrm.com"),  # plain http only on localhost
        ("CAPSULE_TOKEN_AUTH_METHOD", "private_key_jwt"),
        ("TOKEN_CACHE_SECONDS", "-1"),
        ("REDIRECT_URI", "not a url"),
    ],
)
def test_a_wrong_setting_fails_loudly(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**REQUIRED, name: value})


@pytest.mark.parametrize(
    ("env", "minimum"),
    [
        ({"LEASE_SECONDS": "1"}, 18),
        ({"LEASE_SECONDS": "17"}, 18),
        ({"HTTP_TIMEOUT_SECONDS": "55"}, 65),  # the default lease is too short for it
        ({"HTTP_TIMEOUT_SECONDS": "20.5", "LEASE_SECONDS": "30"}, 31),
    ],
)
def test_a_lease_too_short_for_one_capsule_call_is_refused_naming_the_minimum(
    env: dict[str, str], minimum: int
) -> None:
    with pytest.raises(ConfigError, match=f"LEASE_SECONDS must be at least {minimum} "):
        Settings.from_env({**REQUIRED, **env})


def test_a_lease_of_one_capsule_call_plus_the_margin_is_enough() -> None:
    settings = Settings.from_env({**REQUIRED, "LEASE_SECONDS": "18"})

    assert (settings.lease_seconds, settings.http_timeout_seconds) == (18, 8.0)


def test_base_url_loses_its_trailing_slash() -> None:
    settings = Settings.from_env({**REQUIRED, "CAPSULE_BASE_URL": "http://127.0.0.1:8901/"})

    assert settings.capsule_base_url == "http://127.0.0.1:8901"


def test_pkce_challenge_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

    assert binding.pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_failure_page_escapes_everything_it_shows() -> None:
    page = pages.failure(
        400,
        title="<b>t</b>",
        message="m & <i>",
        next_step="n",
        detail='"><script>',
        retry_url='start?x="y"',
    )

    assert "<b>t</b>" not in page["body"]
    assert "<script>" not in page["body"]
    assert "&lt;b&gt;t&lt;/b&gt;" in page["body"]
    assert 'href="start?x=&quot;y&quot;"' in page["body"]


def test_pages_are_locked_down() -> None:
    page = pages.connected(site_name="S", user_name="U", reconnected=False, continue_to=None)

    headers = page["headers"]
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<link" not in page["body"]
    assert "<script" not in page["body"]
    assert "http" not in page["body"]  # no external asset of any kind
