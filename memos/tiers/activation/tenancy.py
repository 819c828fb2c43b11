"""Tenant isolation of KV chunks: a key namespace per tenant, and a cache salt per tenant.

Two layers, because chunks live in two places:

- In the daemon's levels, every chunk a tenant stores, looks up, pins or fetches sits under
  that tenant's namespace (:func:`tenant_namespace`, a prefix of the key in every level).
  The tenant comes from the caller's token, never from a message field, so a tenant cannot
  read, probe, pin or overwrite another tenant's chunks, whatever keys it sends. This holds
  for every chunk, including blocks an engine computed and stored with its own hashes.
- In a serving engine's own prefix cache (vLLM's GPU blocks, shared by every request of that
  engine), isolation comes from the request's ``cache_salt``, which vLLM folds into the first
  block's hash. Chunks the daemon creates itself (Migrate) always carry the tenant's salt
  (:func:`tenant_cache_salt`), so a tenant's migrated prefix is reused only by that tenant's
  requests sent with that salt. An engine front-end should send the same salt on every
  request of the tenant; the daemon reports it (``ActivationService.Stats``, and in every
  activation cube's ``cache_salt``).
"""

from __future__ import annotations

import hashlib
import hmac

NAMESPACE_BYTES = 16
_NAMESPACE_DOMAIN = b"memos-kv-tenant/1\x00"
_SALT_DOMAIN = b"memos-kv-salt/1\x00"


def tenant_namespace(tenant: str) -> bytes:
    """The 16-byte prefix of ``tenant``'s keys in every level (distinct per tenant)."""
    if not tenant:
        raise ValueError("a tenant namespace needs a tenant")
    return hashlib.sha256(_NAMESPACE_DOMAIN + tenant.encode()).digest()[:NAMESPACE_BYTES]


def tenant_cache_salt(tenant: str, secret: bytes | None = None) -> str:
    """The cache salt of ``tenant``'s chunks: readable without ``secret``, unguessable with it.

    Without a secret anyone who knows a tenant's name knows its salt; the store's namespaces
    still isolate tenants, but an engine shared by tenants that accepts client-chosen salts
    would let one probe another's cached prefixes by timing. A secret closes that.
    """
    if not tenant:
        raise ValueError("a cache salt needs a tenant")
    if secret:
        digest = hmac.new(secret, _SALT_DOMAIN + tenant.encode(), hashlib.sha256).hexdigest()
        return f"memos:{digest[:32]}"
    return f"memos-tenant:{tenant}"
