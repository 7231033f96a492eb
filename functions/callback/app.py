"""GET /auth/callback: consume the state, exchange the code, save the connection.

The same path serves the sign-in's own follow-ups, for the browser holding its binding
cookie (whose path is this one): ``?connected=`` the page after a callback without a return
URL, and ``?retry=`` the "Try again" of a failure page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.config import settings
from capsule_oauth.errors import AuthorizationFailed
from capsule_oauth.flows.callback import (
    Connected,
    complete_authorization,
    connected_page,
    retry_sign_in,
)
from capsule_oauth.observability import count, count_by, logger, metrics
from capsule_oauth.web import pages, request
from capsule_oauth.web.binding import binding_cookie, binding_cookie_name, cookie_name_for_digest
from capsule_oauth.web.return_urls import with_query


def _sessionless_retry(return_to: str | None) -> str | None:
    """Without connect sessions, a new sign-in may start here; with them, only in the app."""
    if settings().require_connect_session:
        return None
    # Relative to /auth/callback, so it works behind any domain or base path.
    return "start" + (f"?{urlencode({'return_to': return_to})}" if return_to else "")


def _back_query(connected: Connected) -> dict[str, str]:
    """The capsule_* query of the return URL: the same each time this browser asks."""
    query = {
        "capsule_connection_id": connected.connection_id,
        "capsule_status": "reconnected" if connected.reconnected else "connected",
    }
    if connected.result:
        query["capsule_result"] = connected.result
    return query


def _see_other(location: str) -> dict[str, Any]:
    return pages.response(303, headers={"Location": location})


def _app_host(return_url: str) -> str:
    return urlsplit(return_url).hostname or "the app"


def _back_to_app(return_url: str | None, reason: str) -> tuple[str, str] | None:
    if not return_url:
        return None
    link = with_query(return_url, {"capsule_status": "error", "capsule_error": reason})
    return link, f"Back to {_app_host(return_url)}"


def _refused(failure: AuthorizationFailed) -> dict[str, Any]:
    logger.info("Authorization failed", extra={"reason": failure.reason, "status": failure.status})
    count_by("AuthorizationFailed", "reason", failure.reason)
    retry = failure.retry_url
    if retry is None and failure.reason not in _NO_RETRY:
        retry = _sessionless_retry(failure.return_to)
    return pages.refused(
        failure, retry_url=retry, back=_back_to_app(failure.return_url, failure.reason)
    )


# Failures a new sign-in from here cannot fix: the sign-in is over or is another browser's.
_NO_RETRY = {"SignInCompleted", "SignInInProgress", "BindingMismatch", "PageExpired"}


def _keep_cookie(state: str, nonce: str, path: str) -> str:
    """The binding cookie again, for StateTtlSeconds: this browser is recognised when it
    comes back to the sign-in it completed (reload, Back, approving again)."""
    return binding_cookie(state, nonce, path=path, max_age=settings().state_ttl_seconds)


def _already_connected(connected: Connected) -> dict[str, Any]:
    back = None
    if connected.return_url:
        url = with_query(connected.return_url, _back_query(connected))
        back = (url, f"Back to {_app_host(connected.return_url)}")
    return pages.already_connected(
        site_name=connected.site_name,
        user_name=connected.user_name,
        back=back,
        continue_to=connected.return_to,
    )


def _follow_up(event: APIGatewayProxyEventV2, params: dict[str, str]) -> dict[str, Any]:
    """``?connected=`` or ``?retry=``: for the browser whose cookie the digest names."""
    digest = params.get("connected") or params.get("retry") or ""
    nonce = request.cookie(event, cookie_name_for_digest(digest)) if digest else None
    try:
        if "connected" in params:
            shown = connected_page(settings(), digest=digest, binding_nonce=nonce)
            return pages.connected(
                site_name=shown.site_name,
                user_name=shown.user_name,
                reconnected=shown.reconnected,
                continue_to=shown.return_to,
            )
        scheme, host = request.origin(event)
        again = retry_sign_in(
            settings(), digest=digest, binding_nonce=nonce, scheme=scheme, host=host
        )
    except AuthorizationFailed as failure:
        return _refused(failure)
    count("AuthorizationStarted")
    return pages.redirect(again.authorise_url, cookies=[again.binding_cookie])


@request.never_raises("Callback")
def callback(event: APIGatewayProxyEventV2) -> dict[str, Any]:
    params = request.query(event)
    if "state" not in params and ("connected" in params or "retry" in params):
        return _follow_up(event, params)
    state = params.get("state", "")
    nonce = request.cookie(event, binding_cookie_name(state)) if state else None
    try:
        connected = complete_authorization(settings(), params=params, binding_nonce=nonce)
    except AuthorizationFailed as failure:
        if failure.reason == "AccessDenied" and failure.return_url:
            count_by("AuthorizationFailed", "reason", failure.reason)
            page = _see_other(with_query(failure.return_url, {"capsule_status": "denied"}))
            page["cookies"] = [binding_cookie(state, "", path=event.raw_path or "/", max_age=0)]
            return page
        return _refused(failure)
    if connected.again:
        count("CallbackRevisited")
        return _already_connected(connected)
    count("ConnectionUpdated" if connected.reconnected else "ConnectionCreated")
    # Never rest on a URL holding the code and state: to the app, or to a page of our own.
    if connected.return_url:
        page = _see_other(with_query(connected.return_url, _back_query(connected)))
    else:
        page = _see_other(f"{connected.cookie_path}?connected={connected.digest}")
    page["cookies"] = [_keep_cookie(state, nonce or "", connected.cookie_path)]
    return page


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return callback(event)
