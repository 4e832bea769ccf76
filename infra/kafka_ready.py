"""Exit 0 when a Kafka broker answers a Metadata request; the standard library only.

    kafka_ready.py BOOTSTRAP [--min-brokers N] [--cluster-id ID] [--print]

BOOTSTRAP is ``host:port[,host:port...]`` (a ``kafka://`` prefix is dropped); the first address
that answers decides. ``--cluster-id`` fails when the answer comes from another cluster (another
broker on the port); ``--min-brokers`` waits for a cluster's brokers to have registered.

Security comes from the environment the service reads: TIPSTREAM_KAFKA_SECURITY_PROTOCOL
(PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), TIPSTREAM_KAFKA_SSL_CAFILE,
TIPSTREAM_KAFKA_SSL_CERTFILE, TIPSTREAM_KAFKA_SSL_KEYFILE,
TIPSTREAM_KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512),
TIPSTREAM_KAFKA_SASL_USERNAME, TIPSTREAM_KAFKA_SASL_PASSWORD: with SASL the check logs in, so a
wrong password fails here too.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import secrets
import socket
import ssl
import struct
import sys


class KafkaError(Exception):
    pass


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.correlation = 0

    def request(self, api_key: int, api_version: int, body: bytes) -> bytes:
        self.correlation += 1
        client_id = b"tipstream-ready"
        header = struct.pack(">hhih", api_key, api_version, self.correlation, len(client_id))
        payload = header + client_id + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", self._read(4))[0]
        reply = self._read(size)
        if struct.unpack(">i", reply[:4])[0] != self.correlation:
            raise KafkaError("correlation id mismatch")
        return reply[4:]

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        value = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return value

    def bytes_(self) -> bytes:
        n = self.take(">i")
        value = self.data[self.pos : self.pos + max(n, 0)]
        self.pos += max(n, 0)
        return value


def _authenticate(conn: Conn, mechanism: str, username: str, password: str) -> None:
    reply = Reader(conn.request(17, 1, _string(mechanism)))  # SaslHandshake v1
    if (code := reply.take(">h")) != 0:
        raise KafkaError(f"SASL mechanism {mechanism} not enabled (error {code})")

    def step(token: bytes) -> bytes:
        answer = Reader(conn.request(36, 0, struct.pack(">i", len(token)) + token))
        code = answer.take(">h")
        message = answer.string()
        if code != 0:
            raise KafkaError(f"SASL authentication failed: {message or code}")
        return answer.bytes_()

    if mechanism == "PLAIN":
        step(b"\0" + username.encode() + b"\0" + password.encode())
        return
    if not mechanism.startswith("SCRAM-SHA-"):
        raise KafkaError(f"unsupported SASL mechanism {mechanism}")
    digest = "sha256" if mechanism == "SCRAM-SHA-256" else "sha512"
    nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    first_bare = f"n={username.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
    server_first = step(b"n,," + first_bare.encode()).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    if not fields["r"].startswith(nonce):
        raise KafkaError("SCRAM server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(
        digest, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = hashlib.new(digest, client_key).digest()
    final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(stored_key, auth_message, digest).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_final = step(f"{final_bare},p={base64.b64encode(proof).decode()}".encode()).decode()
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, digest).digest()).decode()
    if server_final != f"v={expected}":
        raise KafkaError("SCRAM server signature does not match")


def _connect(host: str, port: int) -> Conn:
    protocol = os.environ.get("TIPSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    sock = socket.create_connection((host, port), timeout=5)
    try:
        if protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(
                cafile=os.environ.get("TIPSTREAM_KAFKA_SSL_CAFILE") or None
            )
            certfile = os.environ.get("TIPSTREAM_KAFKA_SSL_CERTFILE")
            if certfile:
                context.load_cert_chain(certfile, os.environ.get("TIPSTREAM_KAFKA_SSL_KEYFILE"))
            sock = context.wrap_socket(sock, server_hostname=host)
        conn = Conn(sock)
        if protocol.startswith("SASL_"):
            _authenticate(
                conn,
                os.environ.get("TIPSTREAM_KAFKA_SASL_MECHANISM", "PLAIN").upper(),
                os.environ.get("TIPSTREAM_KAFKA_SASL_USERNAME", ""),
                os.environ.get("TIPSTREAM_KAFKA_SASL_PASSWORD", ""),
            )
        return conn
    except BaseException:
        sock.close()
        raise


def metadata(address: str) -> tuple[str | None, list[int]]:
    """(cluster id, registered broker ids) as one broker at ``host:port`` sees them."""
    host, port = address.rsplit(":", 1)
    conn = _connect(host, int(port))
    try:
        # Metadata v4 with an empty topic array: brokers only; Kafka 4 dropped v0-v3.
        reply = Reader(conn.request(3, 4, struct.pack(">i", 0) + b"\x00"))
        reply.take(">i")  # throttle ms
        brokers = []
        for _ in range(reply.take(">i")):
            brokers.append(reply.take(">i"))
            reply.string()  # host
            reply.take(">i")  # port
            reply.string()  # rack
        return reply.string(), sorted(brokers)
    finally:
        conn.sock.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("--min-brokers", type=int, default=1)
    parser.add_argument("--cluster-id")
    parser.add_argument("--print", action="store_true", dest="show")
    args = parser.parse_args(argv)
    problem = "no address given"
    for address in args.bootstrap.removeprefix("kafka://").split(","):
        try:
            cluster_id, brokers = metadata(address.strip())
        except (OSError, KafkaError, struct.error) as exc:
            problem = f"{address}: {exc}"
            continue
        if args.cluster_id and cluster_id != args.cluster_id:
            problem = f"{address} belongs to cluster {cluster_id}, not {args.cluster_id}"
        elif len(brokers) < args.min_brokers:
            problem = f"{address}: {len(brokers)} of {args.min_brokers} brokers registered"
        else:
            if args.show:
                print(f"cluster {cluster_id}, brokers {','.join(map(str, brokers))}")
            return 0
    if args.show:
        print(problem, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
