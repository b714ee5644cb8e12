#!/usr/bin/env python3
"""A lean tus client for bench/web-throughput.sh: one keep-alive connection, each PATCH's body
sent with sendfile(2) straight from the page cache with a Content-Length, so the client costs
as little CPU as a client can (on 2 cores it competes with the server being measured).

Usage: tus_sendfile.py HOST PORT PATH_OF_UPLOAD FILE CHUNK_BYTES USER:PASSWORD
Prints nothing on success; exits 1 with the server's answer otherwise.
"""
import base64
import os
import socket
import sys


def answer(sock):
    """The status and headers of one response (its body, if any, is small and read whole)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise SystemExit("connection closed")
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        body += sock.recv(65536)
    return status, headers, body


def main():
    host, port, path, file, chunk, cred = sys.argv[1:]
    chunk = int(chunk)
    auth = base64.b64encode(cred.encode()).decode()
    length = os.stat(file).st_size
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with open(file, "rb") as f:
        off = 0
        while off < length:
            n = min(chunk, length - off)
            sock.sendall(
                (f"PATCH {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Basic {auth}\r\n"
                 f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {off}\r\n"
                 f"Content-Type: application/offset+octet-stream\r\nContent-Length: {n}\r\n\r\n").encode())
            sent = 0
            while sent < n:
                sent += os.sendfile(sock.fileno(), f.fileno(), off + sent, n - sent)
            status, headers, body = answer(sock)
            if status != 204:
                raise SystemExit(f"PATCH at {off}: {status} {body!r}")
            off = int(headers["upload-offset"])


if __name__ == "__main__":
    main()
