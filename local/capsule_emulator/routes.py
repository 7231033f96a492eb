"""Every answer the emulator gives, from a ``Request`` to a ``Reply``, with no socket in sight.

The HTTP server (server.py) and the unit tests' fake on ``responses`` both call ``handle``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import cast
from urllib.parse import parse_qs, urlencode

from local.capsule_emulator import api, faults, oauth, pages, signin
from local.capsule_emulator import hooks as rest_hooks
from local.capsule_emulator.faults import Faults
from local.capsule_emulator.store import SCOPES, CapsuleStore
from local.capsule_emulator.wire import (
    ACCOUNT_PATH,
    API_PREFIX,
    AUTHORISE_PATH,
    CHANGES_PATH,
    DECISION_PATH,
    DISCOVERY_PATH,
    FAULTS_PATH,
    HTML,
    JSON,
    LOGIN_PATH,
    REVOKE_PATHS,
    SETTINGS_PATH,
    STATE_PATH,
    STEP_PATH,
    TOKEN_PATH,
    Reply,
    Request,
    html_reply,
    json_reply,
)

Route = Callable[[CapsuleStore, Faults, Request], Reply]


def handle(store: CapsuleStore, fault_queue: Faults, request: Request) -> Reply:
    """The emulator's answer to one request (faults are the transport's business)."""
    path = request.path
    if path == API_PREFIX or path.startswith(API_PREFIX + "/") or path.startswith("/api/"):
        return _api(store, request)
    methods = ROUTES.get(path)
    if methods is None:
        return json_reply(404, {"message": "Not found"})
    route = methods.get(request.method)
    if route is None:
        allow = ", ".join(sorted(methods))
        return json_reply(405, {"message": f"Use {allow}"}, {"Allow": allow})
    return route(store, fault_queue, request)


def record(store: CapsuleStore, request: Request) -> None:
    """Note a token request (before any fault), for tests to read in ``token_requests``."""
    if request.path == TOKEN_PATH and request.method == "POST":
        fields = oauth.form_fields(request.body)
        store.record_token_request({key: values[0] for key, values in fields.items()})


def state(store: CapsuleStore, fault_queue: Faults) -> dict[str, object]:
    """A summary with no secrets in it (what GET /_emulator/state answers)."""
    return {**store.summary(), "faults": fault_queue.pending()}


def discovery(base_url: str) -> dict[str, object]:
    methods = ["client_secret_basic", "client_secret_post"]
    return {
        "issuer": base_url,
        "authorization_endpoint": base_url + AUTHORISE_PATH,
        "token_endpoint": base_url + TOKEN_PATH,
        "revocation_endpoint": base_url + REVOKE_PATHS[0],
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
    }


# ----------------------------------------------------------------------- sign-in pages


def _page_step(step: Callable[[dict[str, str]], str], request: Request) -> Reply:
    """A form's POST: do the step, then 303 to the request's page (post/redirect/get)."""
    form = {key: values[-1] for key, values in oauth.form_fields(request.body).items()}
    try:
        request_id = step(form)
    except signin.PageError as exc:
        return html_reply(exc.status, pages.error_page(exc.message))
    location = f"{STEP_PATH}?{urlencode({'request_id': request_id})}"
    return Reply(303, b"", HTML, {"Location": location})


def _redirect(location: str) -> Reply:
    body = pages.redirect_page(location).encode("utf-8")
    return Reply(302, body, HTML, {"Location": location})


def _authorise(store: CapsuleStore, _: Faults, request: Request) -> Reply:
    try:
        page = signin.begin_authorisation(store, parse_qs(request.query, keep_blank_values=True))
    except signin.PageError as exc:
        return html_reply(exc.status, pages.error_page(exc.message))
    except signin.RedirectError as exc:
        return _redirect(exc.location)
    return html_reply(200, page)


def _account(store: CapsuleStore, _: Faults, request: Request) -> Reply:
    return _page_step(
        lambda f: signin.choose_account(store, f.get("request_id"), f.get("subdomain")), request
    )


def _login(store: CapsuleStore, _: Faults, request: Request) -> Reply:
    return _page_step(
        lambda f: signin.login(store, f.get("request_id"), f.get("username"), f.get("password")),
        request,
    )


def _step(store: CapsuleStore, _: Faults, request: Request) -> Reply:
    query = parse_qs(request.query)
    try:
        page = signin.step_page(store, (query.get("request_id") or [""])[-1])
    except signin.PageError as exc:
        return html_reply(exc.status, pages.error_page(exc.message))
    return html_reply(200, page)


def _decision(store: CapsuleStore, _: Faults, request: Request) -> Reply:
    form = {key: values[-1] for key, values in oauth.form_fields(request.body).items()}
    try:
        location = signin.decide(store, form.get("request_id"), form.get("decision"))
    except signin.PageError as exc:
        return html_reply(exc.status, pages.error_page(exc.message))
    return _redirect(location)


# ----------------------------------------------------------------------- OAuth, API


def _oauth_error(exc: oauth.OAuthError) -> Reply:
    payload = {"error": exc.error, "error_description": exc.description}
    return json_reply(exc.status, payload, {**oauth.NO_STORE, **exc.headers})


def _token(store: CapsuleStore, _: Faults, request: Request) -> Reply:
    try:
        form = oauth.oauth_form(request.query, request.content_type, request.body)
        payload = oauth.token(store, form, request.authorization)
    except oauth.OAuthError as exc:
        return _oauth_error(exc)
    return json_reply(200, payload, oauth.NO_STORE)


def _revoke(store: CapsuleStore, _: Faults, request: Request) -> Reply:
    try:
        form = oauth.oauth_form(request.query, request.content_type, request.body)
        oauth.revoke(store, form, request.authorization)
    except oauth.OAuthError as exc:
        return _oauth_error(exc)
    return Reply(200, b"", JSON, oauth.NO_STORE)


def _api(store: CapsuleStore, request: Request) -> Reply:
    query = parse_qs(request.query, keep_blank_values=True)
    try:
        principal, rate_headers = api.authorise(store, request.authorization, query)
    except api.ApiError as exc:
        return json_reply(exc.status, exc.body, exc.headers)
    relative = request.path.removeprefix(API_PREFIX)
    if (
        relative == "/resthooks"
        or relative.startswith("/resthooks/")
        or (relative == "/parties" and request.method == "POST")
    ):
        return _api_write(store, principal, request, relative, rate_headers)
    try:
        payload, headers = api.resource(
            request.method, request.path, principal, query, request.base_url
        )
    except api.ApiError as exc:
        return json_reply(exc.status, exc.body, {**rate_headers, **exc.headers})
    return json_reply(200, payload, {**rate_headers, **headers})


def _api_write(
    store: CapsuleStore,
    principal: api.Principal,
    request: Request,
    relative: str,
    rate_headers: Mapping[str, str],
) -> Reply:
    """REST hooks, and creating a party (which its hooks hear of)."""
    needed = "read" if request.method == "GET" else "write"
    if needed not in principal.scope:
        message = f"The access token does not have the {needed} scope"
        return json_reply(403, {"message": message}, rate_headers)
    try:
        body = _json_body(request) if request.method == "POST" else None
    except ValueError as exc:
        return json_reply(400, {"message": str(exc)}, rate_headers)
    account = principal.account
    if relative == "/parties":
        fields = body.get("party") if body else None
        party = store.create_party(account.subdomain, fields if isinstance(fields, dict) else {})
        return json_reply(201, {"party": party}, rate_headers)
    try:
        status, payload = rest_hooks.handle(
            store.hooks,
            request.method,
            relative,
            subdomain=account.subdomain,
            client_id=principal.client_id,
            admin=account.admin,
            body=body,
        )
    except rest_hooks.HookRefused as refused:
        return json_reply(refused.status, {"message": refused.message}, rate_headers)
    if status == 204:
        return Reply(204, b"", JSON, dict(rate_headers))
    return json_reply(status, payload, rate_headers)


# ----------------------------------------------------------------------- control plane


def _json_body(request: Request) -> dict[str, object]:
    try:
        data = json.loads(request.body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return cast(dict[str, object], data)


def _faults_add(_: CapsuleStore, fault_queue: Faults, request: Request) -> Reply:
    try:
        fault = faults.add_from_json(fault_queue, _json_body(request))
    except ValueError as exc:
        return json_reply(400, {"message": str(exc)})
    return json_reply(201, {"fault": fault.as_dict()})


def _record_change(store: CapsuleStore, _: Faults, request: Request) -> Reply:
    """The home page's button (a form) or a test (JSON): a party created on a site."""
    if request.content_type.startswith("application/json"):
        try:
            data = _json_body(request)
        except ValueError as exc:
            return json_reply(400, {"message": str(exc)})
    else:
        data = {key: values[-1] for key, values in oauth.form_fields(request.body).items()}
    subdomain = str(data.get("subdomain") or "")
    if store.find_account(subdomain) is None:
        return json_reply(400, {"message": "subdomain must name one of the emulator's accounts"})
    party = store.create_party(subdomain, {"firstName": "Changed", "lastName": "By Hand"})
    if request.content_type.startswith("application/json"):
        return json_reply(201, {"party": party})
    return Reply(303, b"", HTML, {"Location": "/"})


def _settings_update(store: CapsuleStore, _: Faults, request: Request) -> Reply:
    try:
        settings = store.update_settings(_json_body(request))
    except ValueError as exc:
        return json_reply(400, {"message": str(exc)})
    return json_reply(200, {"settings": settings})


ROUTES: Mapping[str, Mapping[str, Route]] = {
    "/": {"GET": lambda s, _f, r: html_reply(200, pages.home_page(r.base_url, s.accounts))},
    CHANGES_PATH: {"POST": _record_change},
    DISCOVERY_PATH: {"GET": lambda _s, _f, r: json_reply(200, discovery(r.base_url))},
    AUTHORISE_PATH: {"GET": _authorise},
    ACCOUNT_PATH: {"POST": _account},
    LOGIN_PATH: {"POST": _login},
    STEP_PATH: {"GET": _step},
    DECISION_PATH: {"POST": _decision},
    TOKEN_PATH: {"POST": _token},
    **{path: {"POST": _revoke} for path in REVOKE_PATHS},
    FAULTS_PATH: {
        "GET": lambda _s, q, _r: json_reply(200, {"faults": q.pending()}),
        "POST": _faults_add,
        "DELETE": lambda _s, q, _r: json_reply(200, {"cleared": q.clear()}),
    },
    STATE_PATH: {"GET": lambda s, q, _r: json_reply(200, state(s, q))},
    SETTINGS_PATH: {
        "GET": lambda s, _q, _r: json_reply(200, {"settings": s.settings()}),
        "POST": _settings_update,
    },
}
