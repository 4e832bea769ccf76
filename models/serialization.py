"""Signed model state: an HMAC over what the state *is* (model, kind, version, use) and its bytes.

A restore never decodes (or, for the models whose state still holds a pickle, unpickles) bytes
that a holder of the registry key did not write *for that row*. Layout of a signed blob::

    b"TS2" | len(key id) (1 byte) | key id (ASCII) | HMAC-SHA256 (32 bytes) | payload

and the tag covers ``MAGIC | key id | context | payload``, where the context is the model id,
its kind, the version and the purpose (``version`` for ``model_versions``, ``checkpoint`` for
``learner_checkpoints``), each length-prefixed. Why each part:

- the **context**: a database writer who copies a validly signed state of one model into
  another model's row (or an old version's state into a newer row, or a checkpoint into the
  version table) gets a blob that no longer verifies;
- the **key id** in the header: verification picks the key by id from the accepted
  :class:`Keyring`, so keys rotate without a flag day (sign with the new key, keep the old one
  among the verification keys until ``tipstream models resign`` has re-signed every row);
- the header is outside the tag's reach only for lookup: the key id is inside the MAC too.

>>> keys = Keyring.single(b"k" * 32)
>>> what = StateContext("version", "online-logreg", "river-softmax", 3)
>>> blob = sign(b"state", keys, what)
>>> verify(blob, keys, what)
b'state'
>>> try:
...     verify(blob, keys, StateContext("version", "online-rating", "river-softmax", 3))
... except IntegrityError as error:
...     print(error)
signature of model state does not match (key 5e318f8c): wrong key, other row or tampered
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

MAGIC = b"TS2"
"""Format marker of the current scheme (key id, bound context)."""
LEGACY_MAGIC = b"TS1"
"""The first scheme (payload only, one key, no id): never accepted by a worker; only
``tipstream models resign --legacy-key-env`` reads it, once, to re-sign an old registry."""
TAG_BYTES = hashlib.sha256().digest_size
MIN_KEY_BYTES = 32
"""A signing key has at least HMAC-SHA256's own strength: 32 bytes (e.g. ``openssl rand -hex
32``, 64 characters)."""
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")
PURPOSES = ("version", "checkpoint")


class IntegrityError(ValueError):
    """Signed state that is not what was signed: wrong or unknown key, another row's state,
    truncated or tampered."""


def key_id_for(key: bytes) -> str:
    """The default id of a key: the first 8 hex digits of its SHA-256 (reveals nothing usable
    about a 32-byte key, and tells operators which key signed a row)."""
    return hashlib.sha256(key).hexdigest()[:8]


def check_key(key: bytes, name: str = "the registry key") -> None:
    """Refuse a key shorter than :data:`MIN_KEY_BYTES`."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{name} must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")


def check_key_id(key_id: str) -> None:
    """Refuse a key id that is not 1..32 of ``A-Za-z0-9_.-`` (it is stored in every header)."""
    if not KEY_ID_PATTERN.match(key_id):
        raise ValueError(f"a registry key id is 1 to 32 of A-Z a-z 0-9 _ . -, got {key_id!r}")


@dataclass(frozen=True, slots=True)
class Keyring:
    """The key that signs, and every key accepted for verification (the signing one included).

    ``repr`` names the ids only: a keyring can appear in a log or a traceback.
    """

    key_id: str
    key: bytes = field(repr=False)
    verify_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_key_id(self.key_id)
        check_key(self.key)
        for key_id, key in self.verify_keys.items():
            check_key_id(key_id)
            check_key(key, f"verification key {key_id!r}")
        other = self.verify_keys.get(self.key_id)
        if other is not None and other != self.key:
            raise ValueError(f"key id {self.key_id!r} names two different keys")

    @classmethod
    def single(cls, key: bytes, key_id: str | None = None) -> Keyring:
        """A keyring of one key, its id derived from it unless given."""
        return cls(key_id or key_id_for(key), key)

    @property
    def accepted_ids(self) -> tuple[str, ...]:
        """Ids whose signatures verify: the signing key first."""
        return (self.key_id, *(k for k in self.verify_keys if k != self.key_id))

    def key_for(self, key_id: str) -> bytes | None:
        """The accepted key of that id, if any."""
        if key_id == self.key_id:
            return self.key
        return self.verify_keys.get(key_id)


@dataclass(frozen=True, slots=True)
class StateContext:
    """What a state is the state of; signed with it, so it verifies for that row only."""

    purpose: str
    model_id: str
    kind: str
    version: int

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {self.purpose!r}")

    def encoded(self) -> bytes:
        """Length-prefixed fields: no two contexts encode alike (no separator to forge)."""
        parts = [p.encode() for p in (self.purpose, self.model_id, self.kind)]
        return b"".join(struct.pack(">H", len(p)) + p for p in parts) + struct.pack(
            ">q", self.version
        )


def _tag(key: bytes, key_id: bytes, context: StateContext, payload: bytes) -> bytes:
    message = MAGIC + bytes([len(key_id)]) + key_id + context.encoded() + payload
    return hmac.new(key, message, hashlib.sha256).digest()


def sign(payload: bytes, keys: Keyring, context: StateContext) -> bytes:
    """``payload`` signed with the keyring's signing key for the row ``context`` names."""
    key_id = keys.key_id.encode()
    return (
        MAGIC + bytes([len(key_id)]) + key_id + _tag(keys.key, key_id, context, payload) + payload
    )


def _split(blob: bytes) -> tuple[str, bytes, bytes]:
    """(key id, tag, payload) of a current-format blob; :class:`IntegrityError` otherwise."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 1:
        raise IntegrityError("not a signed model state: missing or unknown header")
    size = blob[len(MAGIC)]
    start = len(MAGIC) + 1
    key_id = blob[start : start + size]
    tag = blob[start + size : start + size + TAG_BYTES]
    if len(tag) < TAG_BYTES or not KEY_ID_PATTERN.match(key_id.decode("ascii", "replace")):
        raise IntegrityError("not a signed model state: truncated or malformed header")
    return key_id.decode("ascii"), tag, blob[start + size + TAG_BYTES :]


def signed_key_id(blob: bytes) -> str:
    """The id of the key a blob says it was signed with (unverified: for reports only)."""
    return _split(blob)[0]


def verify(blob: bytes, keys: Keyring, context: StateContext) -> bytes:
    """The payload of a blob signed by an accepted key for exactly ``context``; raises
    :class:`IntegrityError` otherwise, before anything looks at the payload."""
    key_id, tag, payload = _split(blob)
    key = keys.key_for(key_id)
    if key is None:
        raise IntegrityError(
            f"model state signed with key {key_id!r}, not among the accepted keys "
            f"({', '.join(keys.accepted_ids)}): add it to TIPSTREAM_REGISTRY_VERIFY_KEYS"
        )
    if not hmac.compare_digest(tag, _tag(key, key_id.encode(), context, payload)):
        raise IntegrityError(
            f"signature of model state does not match (key {key_id}): wrong key, other row or "
            "tampered"
        )
    return payload


def verify_legacy(blob: bytes, key: bytes) -> bytes:
    """The payload of a first-format blob (``TS1 | HMAC(key, TS1 | payload) | payload``).

    That scheme binds nothing but the bytes, so it is read only to migrate: ``tipstream models
    resign --legacy-key-env`` re-signs such rows in the current format, once.
    """
    header = len(LEGACY_MAGIC) + TAG_BYTES
    if len(blob) < header or not blob.startswith(LEGACY_MAGIC) or not key:
        raise IntegrityError("not a legacy signed model state")
    tag, payload = blob[len(LEGACY_MAGIC) : header], blob[header:]
    expected = hmac.new(key, LEGACY_MAGIC + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, expected):
        raise IntegrityError("legacy model state signature does not match")
    return payload


def sha256_hex(payload: bytes) -> str:
    """Hex SHA-256 of a state, as ``ModelSnapshot.state_sha256`` carries it."""
    return hashlib.sha256(payload).hexdigest()
