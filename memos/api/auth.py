"""Bearer-token authentication: a token maps to one tenant and its scopes.

Tokens are compared by their sha256 digest, so the config may hold digests only. With no
tokens configured the daemon is in development mode: every caller is an admin of the tenant
it names in ``x-memos-tenant`` (``default`` when absent), and the daemon refuses to listen
on anything but loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from memos.config import TokenSpec
from memos.cube import check_tenant
from memos.errors import InvalidArgument, PermissionDenied, Unauthenticated
from memos.kernel import Principal

log = logging.getLogger(__name__)

TENANT_HEADER = "x-memos-tenant"
DEV_TENANT = "default"
_DEV_SCOPES = frozenset({"read", "write", "admin"})


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


class Authenticator:
    def __init__(self, tokens: Sequence[TokenSpec]) -> None:
        self._entries = [
            _Entry(
                bytes.fromhex(t.digest()),
                Principal(t.tenant, frozenset(t.scopes), t.name or t.tenant),
            )
            for t in tokens
        ]
        for e in self._entries:
            check_tenant(e.principal.tenant)

    @property
    def dev_mode(self) -> bool:
        return not self._entries

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Principal:
        headers = {k.lower(): v for k, v in metadata if isinstance(v, str)}
        tenant_header = headers.get(TENANT_HEADER)
        if self.dev_mode:
            tenant = tenant_header or DEV_TENANT
            self._check_tenant(tenant)
            return Principal(tenant, _DEV_SCOPES, "development")
        auth = headers.get("authorization")
        if not auth:
            raise Unauthenticated(
                "missing bearer token: send the metadata 'authorization: Bearer <token>' "
                "(memosctl --token or MEMOS_TOKEN)"
            )
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("malformed authorization metadata: expected 'Bearer <token>'")
        digest = hashlib.sha256(token.strip().encode()).digest()
        principal = None
        for entry in self._entries:  # no early exit: constant time in the number of tokens
            if hmac.compare_digest(entry.digest, digest):
                principal = entry.principal
        if principal is None:
            raise Unauthenticated("unknown or revoked token")
        if tenant_header and tenant_header != principal.tenant:
            if "admin" not in principal.scopes:
                raise PermissionDenied(
                    f"this token belongs to another tenant than {tenant_header!r}: "
                    "drop --tenant or use that tenant's token"
                )
            self._check_tenant(tenant_header)
            return Principal(tenant_header, principal.scopes, principal.name)
        return principal

    @staticmethod
    def _check_tenant(tenant: str) -> None:
        try:
            check_tenant(tenant)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{TENANT_HEADER}: {exc}") from None


def is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
