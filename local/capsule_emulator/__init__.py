"""A strict, in-process emulator of Capsule CRM's OAuth 2.0 server and a slice of API v2.

Standard library only. Start it on a free port and point a client at ``emulator.url``::

    from local.capsule_emulator import CapsuleEmulator

    with CapsuleEmulator(client_id="id", client_secret="secret", port=0) as emulator:
        print(emulator.url)  # http://127.0.0.1:<port>

or from a shell: ``python -m local.capsule_emulator --port 8901 --client-id X --client-secret Y``.

Endpoints (all paths relative to ``emulator.url``)
-------------------------------------------------
``GET  /oauth/authorise``            start: ``response_type=code``, ``client_id``, ``redirect_uri``,
                                     ``state``, ``scope`` (space separated; ``read``, ``write``,
                                     ``user_preference``; default ``read write``), optional
                                     ``code_challenge`` + ``code_challenge_method`` (S256|plain).
``POST /oauth/authorise/account``    form ``request_id``, ``subdomain`` (``exampleco``, also
                                     ``exampleco.capsulecrm.com`` or its https URL).
``POST /oauth/authorise/login``      form ``request_id``, ``username``, ``password``.
``POST /oauth/authorise/decision``   form ``request_id``, ``decision`` = ``allow`` | ``deny``
                                     (only after a successful login). Answers 302 to
                                     ``redirect_uri?code=...&state=...`` or
                                     ``redirect_uri?error=access_denied&...&state=...``.
``POST /oauth/token``                ``authorization_code`` and ``refresh_token`` grants.
``POST /oauth/revoke``, ``POST /oauth/token/revoke``   RFC 7009; revokes the whole grant.
``GET  /api/v2/users/current``, ``GET /api/v2/site``, ``GET /api/v2/parties?page=&perPage=``
``POST /api/v2/parties``             a new person (``{"party": {...}}``); hooks hear of it.
``GET|POST /api/v2/resthooks``, ``GET|DELETE /api/v2/resthooks/{id}``   REST hooks (hooks.py):
                                     administrators only, 20 per site, real deliveries.
``POST /_emulator/changes``          form or JSON ``subdomain``: the home page's button.
``GET  /.well-known/oauth-authorization-server``        discovery document.
``GET|POST|DELETE /_emulator/faults``, ``GET /_emulator/state``,
``GET|POST /_emulator/settings``     control plane for tests and demos (no secrets in answers).

Strictness worth knowing: token and revoke requests must be form encoded, in the body (no
query string), with each parameter once and client credentials sent in exactly one way (body
or HTTP Basic). Codes are single use and expire after a minute; a second use revokes the
tokens issued from the code. ``redirect_uri`` must be resent and equal. Refreshing rotates
both tokens and kills the old pair. The API wants ``Authorization: Bearer``; a token in the
query string is refused. Faults are consumed in the order they were added, one per request;
``/oauth/token`` requests are recorded in ``token_requests`` before any fault applies.

Modules: store (what it remembers), signin and oauth (the sign-in pages' flow; token and
revocation endpoints), api (API v2), hooks (REST hooks and their deliveries), faults, pages
(HTML), wire and routes (a request to its reply, transport free: tests/support/capsule_fake.py
serves the same routes on ``responses``), server (HTTP), cli.
"""

from local.capsule_emulator.faults import FAULT_KINDS, FAULT_TARGETS, Fault, Faults
from local.capsule_emulator.server import CapsuleEmulator
from local.capsule_emulator.store import DEFAULT_ACCOUNTS, Account, CapsuleStore

__all__ = [
    "DEFAULT_ACCOUNTS",
    "FAULT_KINDS",
    "FAULT_TARGETS",
    "Account",
    "CapsuleEmulator",
    "CapsuleStore",
    "Fault",
    "Faults",
]
