"""Exit 0 when a Kafka broker answers a metadata request (ApiVersions then Metadata v0)."""

import socket
import struct
import sys


def _request(sock: socket.socket, api_key: int, api_version: int, body: bytes) -> bytes:
    client_id = b"tipstream-ready"
    header = struct.pack(">hhih", api_key, api_version, 1, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _read(sock, 4))[0]
    return _read(sock, size)


def _read(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def main(address: str) -> int:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        # Metadata v4 with an empty topic array: asks for brokers only; Kafka 4 dropped v0-v3.
        reply = _request(sock, 3, 4, struct.pack(">i", 0) + b"\x00")
        # correlation id, throttle ms, broker count
        _, _, brokers = struct.unpack(">iii", reply[:12])
        return 0 if brokers >= 1 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
