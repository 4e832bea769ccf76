"""Signed model state: what was signed verifies for its own row only; anything else is refused."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from models import catalog
from models.serialization import (
    LEGACY_MAGIC,
    IntegrityError,
    Keyring,
    StateContext,
    key_id_for,
    sha256_hex,
    sign,
    signed_key_id,
    verify,
    verify_legacy,
)

KEY = b"registry-key-of-at-least-32-bytes!"
OLD_KEY = b"the-previous-registry-key-32-bytes"
KEYS = Keyring.single(KEY)
ROW = StateContext("version", "online-logreg", "river-softmax", 3)


def test_signed_state_verifies_to_the_same_bytes() -> None:
    """verify(sign(state)) is the state, for a real model snapshot too."""
    state = catalog.create("online-logreg").snapshot()
    assert verify(sign(state, KEYS, ROW), KEYS, ROW) == state
    assert verify(sign(b"", KEYS, ROW), KEYS, ROW) == b""


@pytest.mark.parametrize("position", [0, 3, 4, 8, 12, 13, 44, 45, -1])
def test_any_flipped_byte_is_rejected(position: int) -> None:
    """Flipping one bit anywhere (magic, key id length, key id, tag or payload) makes verify
    raise IntegrityError."""
    blob = bytearray(sign(b"model state bytes", KEYS, ROW))
    blob[position] ^= 0x01
    with pytest.raises(IntegrityError):
        verify(bytes(blob), KEYS, ROW)


def test_wrong_key_truncated_and_extended_blobs_are_rejected() -> None:
    """Another key, a cut blob, appended bytes or unsigned bytes all fail verification."""
    blob = sign(b"model state bytes", KEYS, ROW)
    for bad in (blob[:-1], blob + b"x", blob[:10], blob[:4], b"", b"model state bytes"):
        with pytest.raises(IntegrityError):
            verify(bad, KEYS, ROW)
    other = Keyring(KEYS.key_id, b"another-key-of-at-least-32-bytes!!")
    with pytest.raises(IntegrityError, match="wrong key"):
        verify(blob, other, ROW)


@pytest.mark.parametrize(
    "other",
    [
        StateContext("version", "online-rating", "river-softmax", 3),
        StateContext("version", "online-logreg", "softmax", 3),
        StateContext("version", "online-logreg", "river-softmax", 4),
        StateContext("checkpoint", "online-logreg", "river-softmax", 3),
    ],
)
def test_state_signed_for_one_row_is_refused_for_any_other(other: StateContext) -> None:
    """The MAC binds model id, kind, version and purpose: a validly signed state copied into
    another model's row, another version or the checkpoint table does not verify there."""
    blob = sign(b"model state bytes", KEYS, ROW)
    with pytest.raises(IntegrityError, match="other row"):
        verify(blob, KEYS, other)


def test_contexts_are_length_prefixed_so_fields_cannot_shift() -> None:
    """("a:b", "c") and ("a", "b:c") encode differently: no separator to move."""
    one = StateContext("version", "ab", "c", 0)
    two = StateContext("version", "a", "bc", 0)
    assert one.encoded() != two.encoded()
    with pytest.raises(IntegrityError):
        verify(sign(b"x", KEYS, one), KEYS, two)


def test_rotation_verifies_old_signatures_and_signs_with_the_new_key() -> None:
    """The header names the key: a keyring that signs with a new key and still accepts the old
    one verifies both; once the old key is dropped, its blobs are refused, naming the key."""
    old = Keyring("old", OLD_KEY)
    rotated = Keyring("new", KEY, {"old": OLD_KEY})
    old_blob = sign(b"state", old, ROW)
    new_blob = sign(b"state", rotated, ROW)
    assert signed_key_id(old_blob) == "old"
    assert signed_key_id(new_blob) == "new"
    assert verify(old_blob, rotated, ROW) == verify(new_blob, rotated, ROW) == b"state"
    with pytest.raises(IntegrityError, match="'old', not among the accepted keys"):
        verify(old_blob, Keyring("new", KEY), ROW)


def test_key_id_tampering_cannot_pick_another_accepted_key() -> None:
    """The key id is inside the MAC: rewriting it to another accepted id fails."""
    rotated = Keyring("new", KEY, {"odd": OLD_KEY})
    blob = sign(b"state", rotated, ROW)
    forged = blob.replace(b"new", b"odd", 1)
    with pytest.raises(IntegrityError):
        verify(forged, rotated, ROW)


def test_short_empty_or_ambiguous_keys_are_refused() -> None:
    """A signing or verification key under 32 bytes, a malformed id, or one id for two keys
    is a configuration error, raised when the keyring is built."""
    with pytest.raises(ValueError, match="at least 32 bytes, got 0"):
        Keyring.single(b"")
    with pytest.raises(ValueError, match="at least 32 bytes, got 27"):
        Keyring.single(b"tipstream-dev-key-change-me")
    with pytest.raises(ValueError, match="verification key 'old'"):
        Keyring("new", KEY, {"old": b"short"})
    with pytest.raises(ValueError, match="key id"):
        Keyring("has space", KEY)
    with pytest.raises(ValueError, match="two different keys"):
        Keyring("k", KEY, {"k": OLD_KEY})


def test_the_default_key_id_is_derived_from_the_key_and_the_repr_hides_keys() -> None:
    """Key id: first 8 hex digits of the key's SHA-256; a keyring's repr shows no key bytes."""
    assert KEYS.key_id == key_id_for(KEY) == hashlib.sha256(KEY).hexdigest()[:8]
    rotated = Keyring("new", KEY, {"old": OLD_KEY})
    assert KEY.decode() not in repr(rotated)
    assert OLD_KEY.decode() not in repr(rotated)
    assert rotated.accepted_ids == ("new", "old")


def test_first_format_blobs_are_refused_by_verify_and_read_only_by_verify_legacy() -> None:
    """A blob of the first scheme (payload-only MAC) never verifies as current state; the
    migration reader accepts it only with the right key."""
    legacy_key = b"tipstream-dev-key-change-me"
    tag = hmac.new(legacy_key, LEGACY_MAGIC + b"state", hashlib.sha256).digest()
    blob = LEGACY_MAGIC + tag + b"state"
    with pytest.raises(IntegrityError, match="header"):
        verify(blob, KEYS, ROW)
    assert verify_legacy(blob, legacy_key) == b"state"
    with pytest.raises(IntegrityError):
        verify_legacy(blob, b"another key")


def test_sha256_hex_is_the_plain_digest() -> None:
    """sha256_hex is the lowercase hex SHA-256 the snapshot events carry."""
    assert sha256_hex(b"state") == hashlib.sha256(b"state").hexdigest()
    assert len(sha256_hex(b"")) == 64
