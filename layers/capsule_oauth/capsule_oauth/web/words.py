"""The words a person reads when connecting fails, looked up by the failure's ``reason``.

Flows and handlers raise an ``AuthorizationFailed`` that carries facts (status, reason,
retry-after, what Capsule said); every sentence shown for it is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from capsule_oauth.errors import AuthorizationFailed


@dataclass(frozen=True)
class Words:
    title: str
    message: str
    next_step: str
    detail: str | None = None


START_AGAIN = "Start again to connect your Capsule account."
FROM_THE_APP = "Go back to the app and start connecting Capsule again from there."
_SAME_BROWSER = f"{FROM_THE_APP} Use the same browser from start to finish."


def _link_unusable(message: str) -> Words:
    return Words("This sign-in link cannot be used", message, _SAME_BROWSER)


def _capsule(title: str, message: str) -> Words:
    return Words(title, message, START_AGAIN)


def _start_refused(message: str) -> Words:
    return Words("This link cannot start a connection", message, FROM_THE_APP)


def _rate_limited(failure: AuthorizationFailed) -> Words:
    wait = failure.retry_after or 60
    return _capsule(
        "Capsule is busy",
        f"Capsule asked us to slow down. Please wait about {wait // 60 + 1} minutes.",
    )


def _capsule_said_no(failure: AuthorizationFailed) -> Words:
    description = failure.capsule_description
    return Words(
        "Capsule could not complete the sign-in",
        f"Capsule answered with the error {failure.capsule_error!r}.",
        START_AGAIN,
        detail=f"Capsule said: {description}" if description else None,
    )


_UNEXPECTED = _capsule(
    "Capsule gave an unexpected answer",
    "Capsule's answer was not what we expected, so nothing was saved.",
)

_WORDS: dict[str, Words | Callable[[AuthorizationFailed], Words]] = {
    # The start request itself.
    "UnknownOrigin": _start_refused("cannot tell this API's own address from the request"),
    "UnsafeReturnTo": _start_refused("return_to must be a path on this site, such as /settings"),
    # What Capsule's redirect back brought.
    "AccessDenied": Words(
        "Access was not allowed",
        "You chose not to allow access in Capsule, so nothing was connected.",
        "If that was a mistake, connect again and choose Allow.",
    ),
    "CapsuleError": _capsule_said_no,
    "CodeMissing": Words(
        "This sign-in link is incomplete",
        "The link from Capsule has no valid authorisation code.",
        START_AGAIN,
    ),
    # The state and the browser binding.
    "StateExpired": Words(
        "This sign-in took too long",
        "Approving in Capsule must be finished within a few minutes of starting, and this"
        " sign-in has expired. Nothing was connected.",
        FROM_THE_APP,
    ),
    "BindingMismatch": Words(
        "This browser's sign-in cookie is missing",
        "The cookie that ties this sign-in to the browser that started it did not come"
        " back: cookies are blocked for this site, or the sign-in was started in another"
        " browser. Nothing was connected.",
        f"Allow cookies for this site, then {FROM_THE_APP[0].lower()}{FROM_THE_APP[1:]}"
        " Use the same browser from start to finish.",
    ),
    "SignInCompleted": Words(
        "This sign-in was already completed",
        "A Capsule account was already connected with this sign-in (in another browser, or"
        " longer ago than this page can show). Nothing was changed now.",
        "If you still need to connect, go back to the app and start again from there.",
    ),
    "SignInInProgress": Words(
        "This sign-in is still being completed",
        "Your first request for it is still connecting your Capsule account.",
        "Wait a few seconds, then reload this page.",
    ),
    "SignInEnded": Words(
        "This sign-in already ended",
        "It ended earlier without connecting your Capsule account; nothing was changed now.",
        START_AGAIN,
    ),
    "PageExpired": Words(
        "This page is no longer available",
        "It is shown only for a few minutes after connecting, and only in the browser that"
        " connected.",
        "Go back to the app to see your Capsule connection.",
    ),
    "StateUnknown": _link_unusable("This sign-in link is unknown or was already used."),
    "StateMalformed": _link_unusable("This sign-in link is incomplete."),
    "StateInvalid": _link_unusable("This sign-in link is incomplete."),
    # Capsule's answers to the code exchange and the identity calls.
    "InvalidGrant": _capsule(
        "Capsule did not accept the sign-in",
        "The approval from Capsule expired or was already used.",
    ),
    "InvalidClient": _capsule(
        "This app is not set up correctly",
        "Capsule did not recognise this app's client credentials. The app's owner needs"
        " to check them.",
    ),
    "RateLimited": _rate_limited,
    "Timeout": _capsule("Capsule did not answer in time", "Capsule took too long to respond."),
    "Unavailable": _capsule("Capsule is unavailable", "We could not reach Capsule just now."),
    "SessionRequired": _start_refused(
        "Connecting Capsule starts in the app: this address cannot be opened on its own."
    ),
    "SessionUnknown": _start_refused("This connect link is not one the app gave out."),
    "SessionExpired": _start_refused("This connect link has expired."),
    "SessionFinished": _start_refused(
        "This connect link was already used: a Capsule account was connected with it."
    ),
    "SessionWithReturnTo": _start_refused(
        "A connect link brings its own return address; return_to cannot be added to it."
    ),
    "MalformedRequest": _start_refused("This request is not one a browser following a link sends."),
    # This deployment itself.
    "NotConfigured": Words(
        "This app is not set up yet",
        "The connection to Capsule is not configured on the server.",
        "Please try again later or tell the app's owner.",
    ),
    "StorageUnavailable": Words(
        "Please try again in a moment",
        "The app's storage is busy just now, so nothing was saved.",
        "Please go back to the app and connect again in a minute.",
    ),
    "InternalError": Words(
        "Something went wrong",
        "The app could not finish connecting your Capsule account; nothing was saved.",
        "Please try again in a minute.",
    ),
}


def _other_account(failure: AuthorizationFailed) -> Words:
    signed_in, expected = failure.accounts or ("another Capsule account", "the connected one")
    return Words(
        "That is a different Capsule account",
        f"You signed in as {signed_in}, but this link reconnects {expected}. Nothing was"
        " changed, and the permission just given was withdrawn.",
        f"Sign out of Capsule, then use the link from the app again and sign in as {expected}.",
    )


_WORDS["ReconnectAccountMismatch"] = _other_account


def for_failure(failure: AuthorizationFailed) -> Words:
    """The words for ``failure``; any other Capsule answer reads as unexpected."""
    words = _WORDS.get(failure.reason, _UNEXPECTED)
    return words(failure) if callable(words) else words
