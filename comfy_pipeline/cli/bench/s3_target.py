"""Where the upload figure uploads to: an S3 API server the bench starts itself on loopback (moto's server mode,
a dev dependency) with throwaway credentials, or a given endpoint whose credentials come from the AWS chain.

The throwaway credentials go only into the upload subprocess's environment and this module's own boto3 client:
never into the bench's environment, so nothing else the bench runs sees them.
"""

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# moto accepts any credentials: these only exist for the loopback server's lifetime.
THROWAWAY = {"AWS_ACCESS_KEY_ID": "comfy-bench", "AWS_SECRET_ACCESS_KEY": "comfy-bench-throwaway",
             "AWS_DEFAULT_REGION": "us-east-1"}
MOTO_MISSING = 'moto is not installed (a dev dependency: pip install -e ".[dev]")'
START_SECONDS = 60.0


@dataclass(frozen=True)
class S3Target:
    endpoint: str
    bucket: str
    env: dict[str, str] = field(default_factory=dict)  # AWS_* for the upload subprocess, on top of os.environ

    def client(self):
        import boto3

        env = self.subprocess_env()
        return boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=env.get("AWS_SESSION_TOKEN"), region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        ).client("s3", endpoint_url=self.endpoint)

    def subprocess_env(self) -> dict[str, str]:
        """With throwaway credentials, none of this machine's AWS settings (its real keys never reach the server);
        without, this machine's AWS chain."""
        inherited = {k: v for k, v in os.environ.items() if not (self.env and k.startswith("AWS_"))}
        return {**inherited, **self.env, "AWS_ENDPOINT_URL": self.endpoint}


def moto_available() -> bool:
    return importlib.util.find_spec("moto") is not None and importlib.util.find_spec("moto.server") is not None


@contextmanager
def bench_bucket(workdir: Path, endpoint: str | None = None) -> Iterator[S3Target]:
    """A fresh bucket on `endpoint` (credentials from the AWS chain), or on a moto server started here; the bucket
    and what is in it are removed afterwards."""
    if endpoint:
        with _fresh_bucket(S3Target(endpoint, _bucket_name())) as target:
            yield target
        return
    with moto_server(workdir / "moto.log") as started:
        with _fresh_bucket(S3Target(started, _bucket_name(), dict(THROWAWAY))) as target:
            yield target


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """`python -m moto.server` on a free loopback port: its endpoint URL, once it accepts connections."""
    if not moto_available():
        raise RuntimeError(MOTO_MISSING)
    log.parent.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_listening(process, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _fresh_bucket(target: S3Target) -> Iterator[S3Target]:
    client = target.client()
    client.create_bucket(Bucket=target.bucket)
    try:
        yield target
    finally:
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket):
                for item in page.get("Contents", ()):
                    client.delete_object(Bucket=target.bucket, Key=item["Key"])
            client.delete_bucket(Bucket=target.bucket)
        except Exception as exc:  # a leftover bucket on a given endpoint is worth saying, not failing for
            print(f"bench: could not remove the bench bucket s3://{target.bucket}: {type(exc).__name__}",
                  file=sys.stderr)


def _wait_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the moto S3 server exited with {process.returncode}; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the moto S3 server did not listen within {START_SECONDS:.0f} s; see {log}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bucket_name() -> str:
    return f"comfy-pipeline-bench-{uuid.uuid4().hex[:12]}"
