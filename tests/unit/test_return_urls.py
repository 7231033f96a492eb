"""Return URLs: only the app's own origins, or a path on this API; decided at session creation."""

from __future__ import annotations

import pytest

from capsule_oauth.web.return_urls import (
    InvalidReturnUrl,
    check_return_url,
    parse_allowed_origins,
    with_query,
)

ALLOWED = parse_allowed_origins("https://app.example.com, https://admin.example.com:8443")


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/settings/integrations?tab=crm",
        "https://APP.Example.com/",  # hosts compare case-insensitively
        "https://app.example.com:443/done",  # :443 is https's own port
        "https://admin.example.com:8443/x",
        "/welcome",  # a path on this API
    ],
)
def test_the_apps_origins_and_paths_on_the_api_are_accepted(url: str) -> None:
    assert check_return_url(url, ALLOWED) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://app.example.com.evil.test/", "not in AllowedReturnOrigins"),
        ("https://app.example.com@evil.test/", "user name"),
        ("https://user:pw@app.example.com/", "user name"),
        ("http://app.example.com/", "not in AllowedReturnOrigins"),
        ("https://app.example.com:444/", "not in AllowedReturnOrigins"),
        ("https://admin.example.com/", "not in AllowedReturnOrigins"),  # 443, not 8443
        ("https://app.example.com/#/settings", "fragment"),
        ("//evil.test/path", "https:// URL or a path"),
        ("javascript:alert(1)", "https:// URL or a path"),
        ("/\\evil.test", "backslashes"),
        ("https://app.example.com/a b", "spaces"),
        ("https://app.example.com/" + "a" * 2048, "longer than"),
    ],
)
def test_everything_else_is_refused_with_a_reason(url: str, why: str) -> None:
    with pytest.raises(InvalidReturnUrl, match=why):
        check_return_url(url, ALLOWED)


def test_with_no_allowed_origins_only_paths_on_the_api_pass() -> None:
    assert check_return_url("/done", ()) == "/done"
    with pytest.raises(InvalidReturnUrl):
        check_return_url("https://app.example.com/", ())


@pytest.mark.parametrize(
    "raw",
    ["http://app.example.com", "https://app.example.com/path", "app.example.com", "https://a@b.c"],
)
def test_a_setting_that_is_not_a_list_of_https_origins_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="https://host"):
        parse_allowed_origins(raw)


def test_the_app_keeps_its_own_query_and_gets_ours_added() -> None:
    assert (
        with_query("https://app.example.com/back?tab=crm", {"capsule_status": "denied"})
        == "https://app.example.com/back?tab=crm&capsule_status=denied"
    )
    assert with_query("/done", {"a": "b c"}) == "/done?a=b+c"
