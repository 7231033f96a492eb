"""``Connector``: the connector's management API from Python, signed with SigV4.

Every call is signed for the service ``execute-api`` (API Gateway's ``AWS_IAM``) with the
credentials botocore finds (environment, profile, SSO, container or instance role), or those
of the session you pass. Nothing a call sends or receives is logged.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import NoCredentialsError
from botocore.session import get_session

from capsule_connector_client.errors import ERRORS, AccessDenied, ConnectorError
from capsule_connector_client.models import AccessToken, Connection, ConnectSession, Disconnected

SERVICE = "execute-api"
RETRIED_STATUSES = frozenset({429, 503})
_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")


class CredentialSource(Protocol):
    """A boto3 or botocore session: anything that resolves AWS credentials."""

    def get_credentials(self) -> Any: ...


def _segment(value: str) -> str:
    return quote(value, safe="")


def _region_of(session: Any, api_url: str) -> str | None:
    """An execute-api URL's own region (any other fails the signature), else the session's."""
    found = _REGION_IN_HOST.search(urlsplit(api_url).hostname or "")
    if found:
        return found.group(1)
    region = getattr(session, "region_name", None)  # boto3.Session
    if not region and hasattr(session, "get_config_variable"):  # botocore.session.Session
        region = session.get_config_variable("region")
    return str(region) if region else None


def _retry_after(answer: requests.Response) -> int | None:
    value = answer.headers.get("Retry-After", "")
    return int(value) if value.strip().isdigit() else None


def raise_for_answer(answer: requests.Response) -> None:
    """The exception an answer that is not a success stands for, raised; else nothing."""
    if answer.status_code < 400:
        return
    try:
        body = answer.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    code = body.get("error")
    message = str(body.get("message") or answer.reason or f"HTTP {answer.status_code}")
    retry_after = _retry_after(answer)
    if isinstance(code, str) and code in ERRORS:
        raise ERRORS[code](message, status=answer.status_code, retry_after=retry_after)
    if answer.status_code == 403 and code is None:
        raise AccessDenied(message, status=403, retry_after=retry_after)
    raise ConnectorError(
        message,
        status=answer.status_code,
        code=code if isinstance(code, str) else None,
        retry_after=retry_after,
    )


class Connector:
    """The connector's API at ``api_url`` (the stack's ``ManagementApiUrl`` output).

    ``session``: a boto3 or botocore session whose credentials sign the calls (default: the
    standard credential chain). ``region``: the API's region (default: the one in an
    ``execute-api`` URL, else the session's). ``retries``: how many times a 503 or 429 is tried
    again, each after its ``Retry-After`` (1 s without one), never waiting longer than
    ``max_retry_wait`` seconds for one; 0 (the default) raises at once.
    """

    def __init__(
        self,
        api_url: str,
        *,
        session: CredentialSource | None = None,
        region: str | None = None,
        retries: int = 0,
        max_retry_wait: float = 30.0,
        timeout: float = 30.0,
        http: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if session is None:
            session = get_session()
        self.api_url = api_url.rstrip("/")
        found = region or _region_of(session, self.api_url)
        if not found:
            raise ValueError(
                "no AWS region: pass region=..., or set AWS_DEFAULT_REGION or a profile's region"
            )
        self.region: str = found
        self.retries = max(0, retries)
        self.max_retry_wait = max_retry_wait
        self.timeout = timeout
        self._session = session
        self._http = http or requests.Session()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"Connector({self.api_url!r}, region={self.region!r})"

    # --- the routes -------------------------------------------------------------------------

    def create_connect_session(
        self,
        owner: str,
        return_url: str | None = None,
        reconnect_connection_id: str | None = None,
    ) -> ConnectSession:
        """POST /connect-sessions: a connect link for ``owner`` (your id for the user)."""
        body: dict[str, Any] = {"owner": owner}
        if return_url is not None:
            body["return_url"] = return_url
        if reconnect_connection_id is not None:
            body["reconnect_connection_id"] = reconnect_connection_id
        return ConnectSession.from_json(self._json("POST", "/connect-sessions", body=body))

    def confirm(self, result: str, owner: str) -> Connection:
        """POST /connect-sessions/confirm: the app confirms the connection a sign-in made."""
        body = {"result": result, "owner": owner}
        return Connection.from_json(self._json("POST", "/connect-sessions/confirm", body=body))

    def list_connections(self, owner: str) -> list[Connection]:
        """GET /connections?owner=: that owner's connections."""
        answer = self._json("GET", "/connections", params={"owner": owner})
        return [Connection.from_json(c) for c in answer["connections"]]

    def get_connection(self, connection_id: str) -> Connection:
        """GET /connections/{connection_id}."""
        return Connection.from_json(self._json("GET", f"/connections/{_segment(connection_id)}"))

    def access_token(self, connection_id: str) -> AccessToken:
        """POST /connections/{connection_id}/access-token: a valid token, refreshed if due."""
        path = f"/connections/{_segment(connection_id)}/access-token"
        return AccessToken.from_json(self._json("POST", path))

    def disconnect(self, connection_id: str, force: bool = False) -> Disconnected:
        """DELETE /connections/{connection_id}: revoke at Capsule, then forget the tokens.
        ``force``: forget them even when Capsule cannot revoke (``revoked`` is then False)."""
        params = {"force": "true"} if force else None
        answer = self.call("DELETE", f"/connections/{_segment(connection_id)}", params=params)
        if answer.status_code == 204:
            return Disconnected(revoked=True, forgotten=True)
        body = answer.json()
        return Disconnected(revoked=bool(body["revoked"]), forgotten=bool(body["forgotten"]))

    def capsule(self, connection_id: str) -> CapsuleProxy:
        """Capsule's API for one connection, through the connector (no token leaves it)."""
        return CapsuleProxy(self, connection_id)

    # --- signed calls -----------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> requests.Response:
        """One signed call to ``path`` on the API, retried as configured; raises the
        ConnectorError its answer stands for, else returns the answer."""
        attempt = 0
        while True:
            answer = self._send(method, path, params, body)
            if answer.status_code not in RETRIED_STATUSES or attempt >= self.retries:
                break
            wait = _retry_after(answer)
            wait = 1 if wait is None else wait
            if wait > self.max_retry_wait:
                break
            attempt += 1
            self._sleep(wait)
        raise_for_answer(answer)
        return answer

    def _json(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: Any = None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = self.call(method, path, params=params, body=body).json()
        return answer

    def _send(
        self, method: str, path: str, params: Mapping[str, str] | None, body: Any
    ) -> requests.Response:
        url = self.api_url + path
        if params:
            url += "?" + urlencode(dict(params), quote_via=quote)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(self._credentials(), SERVICE, self.region).add_auth(request)
        return self._http.request(
            method, url, data=data, headers=dict(request.headers.items()), timeout=self.timeout
        )

    def _credentials(self) -> Any:
        credentials = self._session.get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        return credentials.get_frozen_credentials()


class CapsuleProxy:
    """``Connector.capsule(connection_id)``: Capsule's REST API for that connection, each call
    through ``/connections/{connection_id}/capsule/{path}``. ``path`` is Capsule's, as in
    ``/parties``; the answer is Capsule's JSON (None when it has no body)."""

    def __init__(self, connector: Connector, connection_id: str) -> None:
        self.connector = connector
        self.connection_id = connection_id

    def __repr__(self) -> str:
        return f"CapsuleProxy(connection_id={self.connection_id!r})"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        relative = quote(path.lstrip("/"), safe="/")
        route = f"/connections/{_segment(self.connection_id)}/capsule/{relative}"
        answer = self.connector.call(method, route, params=params, body=json)
        return answer.json() if answer.content else None

    def get(self, path: str, *, params: Mapping[str, str] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, *, json: Any = None, params: Mapping[str, str] | None = None) -> Any:
        return self.request("POST", path, params=params, json=json)

    def put(self, path: str, *, json: Any = None, params: Mapping[str, str] | None = None) -> Any:
        return self.request("PUT", path, params=params, json=json)

    def patch(self, path: str, *, json: Any = None, params: Mapping[str, str] | None = None) -> Any:
        return self.request("PATCH", path, params=params, json=json)

    def delete(self, path: str, *, params: Mapping[str, str] | None = None) -> Any:
        return self.request("DELETE", path, params=params)
