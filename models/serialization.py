"""Signed model state: HMAC-SHA256 over the snapshot bytes, checked before anything decodes them.

The registry, the learner checkpoints and the snapshot topic all store ``sign(state, key)``;
``verify`` gives the state back only if the tag matches, so a restore never decodes (or, for
models whose state holds a pickle, unpickles) bytes that a holder of the key did not write.

>>> blob = sign(b"state", b"key")
>>> verify(blob, b"key")
b'state'
>>> try:
...     verify(blob, b"other key")
... except IntegrityError as error:
...     print(error)
model state signature does not match: wrong key or tampered bytes
"""

from __future__ import annotations

import hashlib
import hmac

MAGIC = b"TS1"
"""Format marker, so a future signing scheme can coexist with blobs already stored."""
TAG_BYTES = hashlib.sha256().digest_size


class IntegrityError(ValueError):
    """Signed state that is not what was signed: wrong key, truncated or tampered."""


def _tag(payload: bytes, key: bytes) -> bytes:
    if not key:
        raise ValueError("the signing key must not be empty")
    return hmac.new(key, MAGIC + payload, hashlib.sha256).digest()


def sign(payload: bytes, key: bytes) -> bytes:
    """``MAGIC | HMAC-SHA256(key, MAGIC | payload) | payload``."""
    return MAGIC + _tag(payload, key) + payload


def verify(blob: bytes, key: bytes) -> bytes:
    """The payload of a signed blob; :class:`IntegrityError` unless the tag matches."""
    header = len(MAGIC) + TAG_BYTES
    if len(blob) < header or not blob.startswith(MAGIC):
        raise IntegrityError("not a signed model state: missing or unknown header")
    tag, payload = blob[len(MAGIC) : header], blob[header:]
    if not hmac.compare_digest(tag, _tag(payload, key)):
        raise IntegrityError("model state signature does not match: wrong key or tampered bytes")
    return payload


def sha256_hex(payload: bytes) -> str:
    """Hex SHA-256 of a state, as ``ModelSnapshot.state_sha256`` carries it."""
    return hashlib.sha256(payload).hexdigest()
