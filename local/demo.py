"""``make demo``: connect, refresh, call Capsule, then run the connection as the app would
(management API, status events) on the local stack, without a browser.

Prints what happens at each step. Never prints a token, code, verifier or secret.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import requests

from local.consent import approve
from local.deployment import LOCAL_CALLER, LocalDeployment, Ports, signed_request


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _step(number: int, text: str) -> None:
    print(f"\n{number}. {text}")


def _fact(text: str) -> None:
    print(f"   - {text}")


def run_demo(stack: LocalDeployment) -> None:
    from capsule_oauth import CapsuleClient, config
    from capsule_oauth.flows import refresh as refresh_flow
    from capsule_oauth.store.connections import ConnectionStore

    http = requests.Session()
    _step(0, "The app's backend asks for a connect link: POST /connect-sessions (SigV4)")
    owner = "demo-user-1"
    session = stack.connect_session(owner)
    if "connect_url" not in session:
        raise SystemExit(f"demo: no connect session: {session}")
    until = time.strftime("%H:%M:%S UTC", time.gmtime(session["expires_at"]))
    _fact(f"for owner {owner!r}, valid until {until}")
    _fact("the person will come back to the app's return URL, here the landing page (/)")

    _step(1, "The person opens the connect link: GET /auth/start?session=…")
    start = http.get(session["connect_url"], allow_redirects=False, timeout=10)
    location = start.headers["Location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    cookie = start.headers["Set-Cookie"]
    _fact(f"{start.status_code} to Capsule's {urlsplit(location).path} (scope {query['scope']!r})")
    _fact(f"state of {len(query['state'])} characters; PKCE {query.get('code_challenge_method')}")
    _fact(f"browser binding cookie: {'; '.join(p.strip() for p in cookie.split(';')[1:])}")

    _step(2, "In Capsule: picks the account 'exampleco', logs in as scott, presses Allow")
    back = approve(http, location)
    _fact(f"Capsule sends the browser back to {urlsplit(back).path} with a one-time code")

    _step(3, "The callback exchanges the code and saves the connection")
    done = http.get(
        back, headers={"Cookie": cookie.split(";")[0]}, allow_redirects=False, timeout=10
    )
    connection_id = _confirm(stack, done, owner)
    settings = config.settings()
    saved = ConnectionStore(settings).get(connection_id)
    if saved is None:
        raise SystemExit("demo: the connection was not saved")
    _fact(
        f"connection {saved.connection_id}: {saved.status}, version {saved.version},"
        f" access token expires {_when(saved.expires_at)}; tokens stored KMS-encrypted"
    )

    _step(4, "A forced refresh (the schedule does this a day before expiry)")
    time.sleep(1)  # so the new expiry visibly moves on
    result = refresh_flow.refresh_connection(
        settings, saved.connection_id, owner="demo", needs_refresh=refresh_flow.forced
    )
    after = result.connection
    if after is None:
        raise SystemExit(f"demo: refresh did not succeed ({result.outcome})")
    _fact(f"outcome: {result.outcome.value}; version {saved.version} -> {after.version}")
    _fact(f"new expiry {_when(after.expires_at)}; Capsule rotated the refresh token")

    _step(5, "Other code of the integration calls Capsule: CapsuleClient(...).get('/parties')")
    client = CapsuleClient(saved.connection_id)
    parties = client.get("/parties", params={"perPage": 5})["parties"]
    remaining = client.rate_limit.remaining if client.rate_limit else "?"
    _fact(f"{len(parties)} parties on the first page; rate limit remaining {remaining}")

    _step(6, "The scheduled refresh (RefreshFunction) runs")
    report = stack.refresh_now(None)
    _fact(f"due {report['due']}: nothing to do until {_when(after.refresh_due_at or 0)}")

    _operate(stack, saved.connection_id)


def _confirm(stack: LocalDeployment, done: requests.Response, owner: str) -> str:
    """Back in the app: its return handler confirms for its signed-in user; the id."""
    returned = parse_qs(urlsplit(done.headers.get("Location", "")).query)
    _fact(f"{done.status_code} back to the app with {sorted(returned)}")
    _fact("the new connection is pending: nothing uses it until the app confirms it")
    confirmed = stack.confirm(returned.get("capsule_result", [""])[0], owner)
    _fact(
        f"the app's return handler: POST /connect-sessions/confirm for {owner!r} (SigV4):"
        f" {confirmed['status']}, {confirmed['body'].get('status')}"
    )
    return returned.get("capsule_connection_id", [""])[0]


def _operate(stack: LocalDeployment, connection_id: str) -> None:
    """The last steps: what the app's backend does with the connection, and what it hears."""
    _step(7, "The app's backend runs the connection over the management API (SigV4)")
    path = f"{stack.url}/connections/{connection_id}"
    read = signed_request("GET", path, LOCAL_CALLER).json()
    _fact(f"GET /connections/{{id}}: {read['status']}, {read['user']['name']} on"
          f" {read['site']['name']}, last refreshed {read['last_refreshed_at']}")  # fmt: skip
    issued = signed_request("POST", f"{path}/access-token", LOCAL_CALLER).json()
    _fact(
        f"POST …/access-token: a {issued['token_type']} token until {_when(issued['expires_at'])}"
    )
    gone = signed_request("DELETE", path, LOCAL_CALLER)
    _fact(f"DELETE /connections/{{id}}: {gone.status_code}; revoked at Capsule, tokens forgotten")

    _step(8, "Status events, from the connections table's stream through EventsFunction")
    for event in reversed(stack.pump_status_events()):
        detail = event["detail"]
        if detail["connection_id"] == connection_id:
            _fact(f"{event['detail-type']} (version {detail['version']}, {detail['reason']})")
    print("\nDemo finished: connect, refresh, API call, management API and events all worked.")


def main(argv: list[str] | None = None) -> int:
    from local.__main__ import add_parameter_overrides, overrides_or_exit

    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    add_parameter_overrides(parser)
    overrides = overrides_or_exit("make demo", parser.parse_args(argv).parameter_overrides)
    stack = LocalDeployment(
        ports=Ports.any_free(),
        schedule=False,
        write_state_file=False,
        quiet=True,
        parameter_overrides=overrides,
    )
    stack.start()
    print(f"Local stack up: gateway {stack.url}, Capsule emulator {stack.capsule_base_url}")
    try:
        run_demo(stack)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
