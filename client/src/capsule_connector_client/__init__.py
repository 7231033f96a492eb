"""The Capsule CRM connector's management API from Python: ``Connector(api_url)``.

Every call is signed with SigV4 for ``execute-api`` from botocore's credential chain;
answers are dataclasses (``models``), errors one exception per API error code (``errors``).
"""

from capsule_connector_client.connector import CapsuleProxy, Connector
from capsule_connector_client.errors import (
    AccessDenied,
    CallerNotAllowed,
    CapsuleTimeout,
    CapsuleUnavailable,
    ConfirmationRequired,
    ConnectionBusy,
    ConnectionChanged,
    ConnectorError,
    Forbidden,
    InvalidOwner,
    InvalidRequest,
    InvalidReturnUrl,
    NotConfigured,
    NotFound,
    OwnerMismatch,
    RateLimited,
    ReauthorizationRequired,
    ResultNotFound,
    RevocationFailed,
    TokenUnavailable,
    Unavailable,
)
from capsule_connector_client.models import (
    AccessToken,
    Connection,
    ConnectSession,
    Disconnected,
    LastError,
    Site,
    User,
)

__all__ = [
    "AccessDenied",
    "AccessToken",
    "CallerNotAllowed",
    "CapsuleProxy",
    "CapsuleTimeout",
    "CapsuleUnavailable",
    "ConfirmationRequired",
    "ConnectSession",
    "Connection",
    "ConnectionBusy",
    "ConnectionChanged",
    "Connector",
    "ConnectorError",
    "Disconnected",
    "Forbidden",
    "InvalidOwner",
    "InvalidRequest",
    "InvalidReturnUrl",
    "LastError",
    "NotConfigured",
    "NotFound",
    "OwnerMismatch",
    "RateLimited",
    "ReauthorizationRequired",
    "ResultNotFound",
    "RevocationFailed",
    "Site",
    "TokenUnavailable",
    "Unavailable",
    "User",
]
