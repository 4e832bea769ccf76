"""Signed model state: what was signed verifies; anything else is refused."""

from __future__ import annotations

import hashlib

import pytest

from models import catalog
from models.serialization import IntegrityError, sha256_hex, sign, verify

KEY = b"registry-key"


def test_signed_state_verifies_to_the_same_bytes() -> None:
    """verify(sign(state)) is the state, for a real model snapshot too."""
    state = catalog.create("online-logreg").snapshot()
    assert verify(sign(state, KEY), KEY) == state
    assert verify(sign(b"", KEY), KEY) == b""


@pytest.mark.parametrize("position", [0, 3, 10, 34, 35, -1])
def test_any_flipped_byte_is_rejected(position: int) -> None:
    """Flipping one bit anywhere (header, tag or payload) makes verify raise IntegrityError."""
    blob = bytearray(sign(b"model state bytes", KEY))
    blob[position] ^= 0x01
    with pytest.raises(IntegrityError):
        verify(bytes(blob), KEY)


def test_wrong_key_truncated_and_extended_blobs_are_rejected() -> None:
    """Another key, a cut blob, appended bytes or unsigned bytes all fail verification."""
    blob = sign(b"model state bytes", KEY)
    for bad in (blob[:-1], blob + b"x", blob[:10], b"", b"model state bytes"):
        with pytest.raises(IntegrityError):
            verify(bad, KEY)
    with pytest.raises(IntegrityError, match="wrong key or tampered"):
        verify(blob, b"another key")


def test_empty_key_is_refused() -> None:
    """An empty key would make the signature meaningless, so it is an error."""
    with pytest.raises(ValueError, match="must not be empty"):
        sign(b"state", b"")


def test_sha256_hex_is_the_plain_digest() -> None:
    """sha256_hex is the lowercase hex SHA-256 the snapshot events carry."""
    assert sha256_hex(b"state") == hashlib.sha256(b"state").hexdigest()
    assert len(sha256_hex(b"")) == 64
