"""A real S3-compatible server for the tests: moto's standalone server, started as
a process on 127.0.0.1 (a free port), and a TCP relay in front of it that a test
can stop and start again to cut the network without losing the server's data
(moto keeps everything in memory: stopping moto itself would empty the buckets).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

#: The credentials moto accepts (any); children get them through the environment.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

_RELAY = r"""
import socket, sys, threading
listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(64)
print("ready", flush=True)

def pump(a, b):
    try:
        while data := a.recv(1 << 16):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

while True:
    client, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", target_port))
    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the S3 test server exited with {proc.returncode} before it answered")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the S3 test server did not answer at {url} within {timeout} s") from None
            time.sleep(0.05)


class MotoServer:
    """moto's server process on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_http(f"{self.endpoint}/moto-api/", self.proc)
        import boto3

        self.client = boto3.client("s3", endpoint_url=self.endpoint, **{
            "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
        })

    def new_bucket(self) -> str:
        name = f"dart-{secrets.token_hex(6)}"
        self.client.create_bucket(Bucket=name)
        return name

    def env(self, endpoint: str | None = None) -> dict:
        """What a child needs to reach the server: credentials and the endpoint."""
        return dict(AWS_ENV, DART_S3_ENDPOINT=endpoint or self.endpoint)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class Relay:
    """A TCP relay to ``target_port`` on a port of its own: stop() is a network outage."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _RELAY, str(self.port), str(self.target_port)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def s3_server():
    """One moto server for the session; AWS credentials set in this process too."""
    pytest.importorskip("moto", reason="moto[server] is not installed (pip install 'moto[server]'): no S3 test server")
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install s3fs): dart cannot open s3:// stores")
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
