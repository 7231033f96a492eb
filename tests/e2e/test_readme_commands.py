"""A newcomer's path through the README: ``make local`` as it prints itself, its export lines,
the README's commands run as written with them, ``make invoke`` of every event, and a
terminal with one line per request while each function's logs go to its own file."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from local.consent import approve
from local.stack import ROOT, Template

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"
REQUEST_LINE = re.compile(
    r"^\d\d:\d\d:\d\d  (GET|POST|DELETE|HEAD) +(/\S*)  (\d{3})  \d+ ms  (\w+)(  .*)?$"
)
# The README's connect-session example returns to https://app.example.com/integrations.
PARAMETERS = "AllowedReturnOrigins=https://app.example.com"


@dataclass
class Terminal:
    """``make local`` as a person starts it: what it printed, and where it keeps its state."""

    url: str
    exports: list[str]
    output: list[str]
    log_dir: Path
    state_file: Path

    def lines_after(self, mark: int) -> list[str]:
        return self.output[mark:]

    def env(self) -> dict[str, str]:
        """The shell after the person pasted the export lines."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPSULE_"))}
        for line in self.exports:
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
        env["LOCAL_STATE_FILE"] = str(self.state_file)
        return env


@pytest.fixture(scope="module")
def terminal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    where = tmp_path_factory.mktemp("make-local")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPSULE_"))}
    env.update(PYTHONUNBUFFERED="1", LOCAL_STATE_FILE=str(where / "stack.json"))
    command = [sys.executable, "-m", "local", "--port", "0", "--aws-port", "0"]
    command += ["--capsule-port", "0", "--log-dir", str(where / "logs")]
    command += ["--parameter-overrides", PARAMETERS]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    banner: list[str] = []
    for line in process.stdout:
        banner.append(line.rstrip("\n"))
        if "Ctrl-C stops everything" in line:
            break
    else:
        pytest.fail("make local did not start:\n" + "\n".join(banner))
    output: list[str] = []
    drain = threading.Thread(
        target=lambda: output.extend(line.rstrip("\n") for line in process.stdout),  # type: ignore[union-attr]
        daemon=True,
    )
    drain.start()
    url = next(line.split()[1] for line in banner if line.strip().startswith("Open "))
    exports = [line.strip() for line in banner if line.strip().startswith("export ")]
    try:
        yield Terminal(url, exports, output, where / "logs", where / "stack.json")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
        drain.join(timeout=5)


def wait_for(lines: list[str], predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not any(predicate(line) for line in list(lines)):
        assert time.monotonic() < deadline, f"never printed; printed:\n{chr(10).join(lines)}"
        time.sleep(0.05)


def test_make_local_prints_the_exports_signed_calls_need(terminal: Terminal) -> None:
    assert terminal.exports == [
        "export AWS_ACCESS_KEY_ID=local",
        "export AWS_SECRET_ACCESS_KEY=local",
        "export AWS_REGION=us-east-1",
        "export AWS_DEFAULT_REGION=us-east-1",
        f"export API={terminal.url}",
    ]


def sh_examples(name: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {name} .*?-->\n```sh\n(.*?)```", text, re.S)
    assert match, f"README has no example {name!r}"
    return [command for command in match.group(1).split("\n\n") if command.strip()]


def python_example(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {name} .*?-->\n```python\n(.*?)```", text, re.S)
    assert match, f"README has no example {name!r}"
    return match.group(1)


def bash(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    shell = shutil.which("bash") or "/bin/bash"
    return subprocess.run(
        [shell, "-c", command], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_connect_session_curl_works_as_written(terminal: Terminal) -> None:
    (command,) = sh_examples("connect-session-curl")

    ran = bash(command, terminal.env())

    assert ran.returncode == 0, ran.stderr
    link = json.loads(ran.stdout)["connect_url"]
    assert link.startswith(f"{terminal.url}/auth/start?session=")
    opened = requests.get(link, allow_redirects=False, timeout=10)
    assert opened.status_code == 302


def test_the_readme_connect_session_python_works_with_the_readmes_return_url(
    terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in terminal.env().items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {}
    exec(python_example("connect-session"), namespace)  # noqa: S102 - the README's own code

    created = namespace["create_connect_session"](
        terminal.url, "user-42", "https://app.example.com/integrations"
    )

    assert created["connect_url"].startswith(f"{terminal.url}/auth/start?session=")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_terminal_shows_one_line_per_request_and_why_a_signature_was_refused(
    terminal: Terminal,
) -> None:
    mark = len(terminal.output)
    env = terminal.env()
    listed = bash(
        'curl -sS --aws-sigv4 "aws:amz:${AWS_REGION}:execute-api"'
        ' --user "${AWS_ACCESS_KEY_ID}:${AWS_SECRET_ACCESS_KEY}"'
        ' "${API}/connections?owner=quiet-1"',
        env,
    )
    forged = bash(
        'curl -sS --aws-sigv4 "aws:amz:${AWS_REGION}:execute-api"'
        ' --user "${AWS_ACCESS_KEY_ID}:not-the-secret" "${API}/connections?owner=quiet-1"',
        env,
    )
    requests.get(f"{terminal.url}/?owner=quiet-1", timeout=10)
    wait_for(terminal.output, lambda line: " GET    /  200 " in line)

    printed = terminal.lines_after(mark)
    assert json.loads(listed.stdout) == {"connections": []}
    assert json.loads(forged.stdout)["message"].startswith("The request signature")
    assert [line for line in printed if not REQUEST_LINE.match(line)] == []
    last = printed[-3:]  # the lines of earlier requests may still arrive after the mark
    parsed = [REQUEST_LINE.match(line).groups() for line in last]  # type: ignore[union-attr]
    assert [(m, p, s, f) for m, p, s, f, _ in parsed] == [
        ("GET", "/connections", "200", "ConnectionsFunction"),
        ("GET", "/connections", "403", "ConnectionsFunction"),
        ("GET", "/", "200", "local"),
    ]
    assert parsed[0][4] is None
    assert parsed[1][4] == (
        "  signature refused: the signature does not match: signed with another secret key,"
        " or the request changed after it was signed"
    )
    assert "Signature=" not in "\n".join(printed)


def csrf_token(terminal: Terminal) -> str:
    """The token the landing page puts in its forms, which every local POST needs."""
    found = re.search(
        r'name=csrf_token value="([^"]+)"', requests.get(terminal.url, timeout=10).text
    )
    assert found, "the landing page's forms carry no CSRF token"
    return found.group(1)


def sign_in(terminal: Terminal, owner: str) -> tuple[str, str, requests.Session, str]:
    """A sign-in of ``owner`` from the landing page at the emulator: the connection id, the
    confirmation result, the browser's session and the return URL it was sent to."""
    http = requests.Session()
    made = http.post(
        f"{terminal.url}/_local/connect",
        data={"owner": owner, "csrf_token": csrf_token(terminal)},
        allow_redirects=False,
        timeout=10,
    )
    started = http.get(made.headers["Location"], allow_redirects=False, timeout=10)
    back = approve(http, started.headers["Location"], subdomain="acme", username="ada")
    cookie = started.headers["Set-Cookie"].split(";")[0]
    done = http.get(back, headers={"Cookie": cookie}, allow_redirects=False, timeout=10)
    query = parse_qs(urlsplit(done.headers["Location"]).query)
    return (
        query["capsule_connection_id"][0],
        query["capsule_result"][0],
        http,
        done.headers["Location"],
    )


def connect(terminal: Terminal, owner: str) -> str:
    """A connection of ``owner``, made through the landing page and the emulator, and
    confirmed by the landing page's return handler."""
    connection_id, _, http, returned = sign_in(terminal, owner)
    with http:
        landing = http.get(f"{terminal.url}{returned}", timeout=10)
    assert "data-testid=confirm-status>200<" in landing.text
    return connection_id


def test_the_readmes_client_examples_work_as_written(
    terminal: Terminal, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in terminal.env().items():
        monkeypatch.setenv(name, value)
    _, forwarded, _, _ = sign_in(terminal, "user-43")  # a link that user-42 opened instead
    connection_id, result, _, _ = sign_in(terminal, "user-42")
    connecting: dict[str, Any] = {}
    confirming: dict[str, Any] = {}
    proxying: dict[str, Any] = {}
    operating: dict[str, Any] = {}

    exec(python_example("client-connect"), connecting)  # noqa: S102 - the README's own code
    exec(python_example("client-confirm"), confirming)  # noqa: S102 - the README's own code
    connector = connecting["connector"]
    said = confirming["on_return"](connector, result, "user-42")
    refused = confirming["on_return"](connector, forwarded, "user-42")
    again = confirming["on_return"](connector, forwarded, "user-43")
    capsys.readouterr()  # what client-connect printed
    exec(python_example("client-proxy"), proxying)  # noqa: S102 - the README's own code
    parties = capsys.readouterr().out.splitlines()
    exec(python_example("client-operate"), operating)  # noqa: S102 - the README's own code

    assert connecting["link"].connect_url.startswith(f"{terminal.url}/auth/start?session=")
    assert said.startswith("Connected to Acme Ltd as ")
    assert refused == "That sign-in was started by someone else; nothing was connected."
    assert again == "That sign-in has expired; please connect again."
    assert proxying["connection"].connection_id == connection_id
    assert len(proxying["page"]["parties"]) == len(parties) == 2
    assert all(re.fullmatch(r"(person|organisation) \d+", line) for line in parties), parties
    assert operating["connection"].connection_id == connection_id
    assert operating["token"].token_type == "Bearer"
    assert operating["done"].revoked is True
    printed = capsys.readouterr().out.splitlines()
    assert f"{connection_id} active Acme Ltd" in printed
    assert operating["connector"].get_connection(connection_id).status == "disconnected"


def test_each_functions_logs_go_to_its_own_file_naming_it(terminal: Terminal) -> None:
    mark = len(terminal.output)
    connection_id = connect(terminal, "logs-owner")
    refreshed = requests.post(
        f"{terminal.url}/_local/refresh",
        params={"connection_id": connection_id},
        headers={"X-CSRF-Token": csrf_token(terminal)},
        timeout=10,
    )
    assert refreshed.status_code == 200
    wait_for(terminal.output, lambda line: "/_local/refresh" in line)
    logs = terminal.log_dir
    deadline = time.monotonic() + 10  # the stream reaches EventsFunction every half second
    while not (logs / "EventsFunction.log").exists():
        assert time.monotonic() < deadline, "EventsFunction never wrote its log"
        time.sleep(0.1)

    printed = terminal.lines_after(mark)
    assert [line for line in printed if not REQUEST_LINE.match(line)] == []
    expected = {
        "ConnectSessionsFunction",
        "StartFunction",
        "CallbackFunction",
        "RefreshFunction",
        "EventsFunction",
    }
    assert expected <= {path.stem for path in logs.glob("*.log")}
    for path in logs.glob("*.log"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        logged = [line for line in lines if "level" in line]  # metrics carry no function name
        assert {line.get("function_name") for line in logged} <= {path.stem}, path.name
    refreshes = (logs / "RefreshFunction.log").read_text()
    assert connection_id in refreshes  # the landing page's refresh, logged as RefreshFunction


def events_and_functions() -> list[tuple[str, str]]:
    template = Template.load()
    by_route = {f"{r.method} {r.path}": r.function for r in template.routes()}
    found = []
    for path in sorted((ROOT / "events").glob("*.json")):
        event = json.loads(path.read_text(encoding="utf-8"))
        if "routeKey" in event:
            function = by_route[event["routeKey"]]
        elif event.get("detail-type") == "Scheduled Event":
            function = "RefreshFunction"
        else:
            function = "EventsFunction"  # the connections table's stream
        found.append((path.name, function))
    return found


# What each event's scenario answers against a stack that holds none of its connections.
EXPECTED_STATUS = {
    "access-token.json": 404,
    "callback-denied.json": 400,
    "callback-missing-state.json": 400,
    "callback.json": 400,
    "capsule-proxy.json": 404,
    "confirm-connection.json": 404,
    "connect-session.json": 201,
    "disconnect-force.json": 404,
    "disconnect.json": 404,
    "get-connection.json": 404,
    "hook-delivery.json": 410,  # a hook token no connection holds: Capsule drops the hook
    "list-connections.json": 200,
    "start-bad-return-to.json": 400,
    "start-return-to.json": 302,
    "start.json": 302,
}
# Events of a sessionless start, which the template allows with this parameter.
EVENT_PARAMETERS = {"start-return-to.json": ["RequireConnectSession=false"]}


def test_every_event_is_listed_here() -> None:
    assert {name for name, _ in events_and_functions()} == set(EXPECTED_STATUS) | {
        "connection-stream.json",
        "scheduled.json",
    }


@pytest.mark.parametrize(("event", "function"), events_and_functions())
def test_make_invoke_runs_every_event_against_the_running_stack(
    terminal: Terminal, event: str, function: str
) -> None:
    command = [sys.executable, "-m", "local.invoke", function, f"events/{event}"]
    if event in EVENT_PARAMETERS:
        command += ["--parameter-overrides", *EVENT_PARAMETERS[event]]

    ran = subprocess.run(
        command,
        cwd=ROOT,
        env=terminal.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert ran.returncode == 0, ran.stderr
    assert "against the running local stack" in ran.stderr
    answer = result_of(ran.stdout)
    if event == "scheduled.json":
        assert set(answer) >= {"due", "failures"}
    elif event == "connection-stream.json":
        assert answer == {"batchItemFailures": []}
    else:
        assert answer["statusCode"] == EXPECTED_STATUS[event], answer
    if event in {"start.json", "start-return-to.json"}:
        assert answer["headers"]["Location"].startswith(f"{capsule_of(terminal)}/oauth/authorise?")
    if event == "start.json":
        assert "made one for owner 'user-42'" in ran.stderr
    if event == "connect-session.json":
        link = json.loads(answer["body"])["connect_url"]
        assert link.startswith(f"{terminal.url}/auth/start?session=")
        assert requests.get(link, allow_redirects=False, timeout=10).status_code == 302


def test_make_invoke_without_a_running_stack_starts_one_for_the_invoke(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPSULE_"))}
    env["LOCAL_STATE_FILE"] = str(tmp_path / "none.json")

    ran = subprocess.run(
        [sys.executable, "-m", "local.invoke", "StartFunction", "events/start.json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert ran.returncode == 0, ran.stderr
    assert "No local stack running: starting one" in ran.stderr
    assert result_of(ran.stdout)["statusCode"] == 302


def result_of(printed: str) -> Any:
    """The handler's result, printed last (indented) after any log line."""
    start = 0 if printed.startswith("{\n") else printed.index("\n{\n") + 1
    return json.loads(printed[start:])


def capsule_of(terminal: Terminal) -> str:
    described: dict[str, Any] = json.loads(terminal.state_file.read_text(encoding="utf-8"))
    return str(described["capsule_base_url"])


def readme_make_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"^\| `(make [^`]+)` \|", text, re.MULTILINE)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_every_make_command_in_the_readmes_table_is_a_target_with_those_variables() -> None:
    commands = readme_make_commands()
    assert len(commands) >= 5
    for command in commands:
        shown = subprocess.run(
            # -n: print what would run, run nothing
            ["make", "-n", "--no-print-directory", *shlex.split(command)[1:]],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert shown.returncode == 0, (command, shown.stderr)


# The layer's examples run in a function of the app's own: this process plays it, with the
# running stack's environment (as make invoke gives a function) and CONNECT_START_URL.
IN_A_FUNCTION = """
import json, os, sys
from pathlib import Path
from local.deployment import read_state_file
from local.invoke import _attach
from local.stack import Template
described = read_state_file(Path(os.environ["LOCAL_STATE_FILE"]))
_attach(described, Template.load(), "ConnectionsFunction", {})
os.environ["CONNECT_START_URL"] = described["url"] + "/auth/start"
sys.path.insert(0, "layers/capsule_oauth")
namespace = {"connection_id": sys.argv[2]}
exec(sys.argv[1], namespace)
print(json.dumps({k: repr(v) for k, v in namespace.items() if k in {"link", "parties"}}))
"""


def test_the_readmes_layer_examples_work_in_a_function_of_your_own(terminal: Terminal) -> None:
    connection_id = connect(terminal, "layer-owner")
    ran = [
        subprocess.run(
            [sys.executable, "-c", IN_A_FUNCTION, python_example(name), connection_id],
            cwd=ROOT,
            env=terminal.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for name in ("layer-connect-session", "layer-capsule-client")
    ]

    assert [r.returncode for r in ran] == [0, 0], [r.stderr for r in ran]
    link = json.loads(ran[0].stdout.splitlines()[-1])["link"]
    assert f"'connect_url': '{terminal.url}/auth/start?session=" in link
    assert ran[1].stdout.splitlines()[-2].startswith("RateLimit(")  # print(client.rate_limit)
    assert json.loads(ran[1].stdout.splitlines()[-1])["parties"].startswith("[")
