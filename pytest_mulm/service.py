"""Running an artifact's server as a real process on a free loopback port."""

from __future__ import annotations

import atexit
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .venv import Venv, clean_env

__all__ = ["RunningService", "free_port", "start_process", "start_service"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningService:
    """A server process of an exported artifact, with the credentials it was given."""

    url: str
    process: subprocess.Popen
    log_path: Path
    api_keys: tuple[str, ...] = ()
    jwt_secret: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api_key(self) -> str:
        return self.api_keys[0]

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode


def start_service(venv: Venv, command: str, *, log_dir: Path, env: dict[str, str] | None = None,
                  api_keys: int = 3, ready_path: str = "/ready", timeout: float = 90) -> RunningService:
    """Start ``command --host 127.0.0.1 --port N`` from ``venv`` and wait until it is ready.

    Fresh random credentials are generated for every start; they live only in the
    process's environment and in the returned object.
    """
    port = free_port()
    keys = tuple(secrets.token_urlsafe(24) for _ in range(api_keys))
    jwt_secret = secrets.token_urlsafe(48)
    full_env = {"MULM_API_KEYS": ",".join(keys), "MULM_JWT_SECRET": jwt_secret, **(env or {})}
    service = start_process([str(venv.script(command)), "--host", "127.0.0.1", "--port", str(port)], port=port,
                            log_dir=log_dir, env=full_env, ready_path=ready_path, timeout=timeout)
    service.api_keys, service.jwt_secret = keys, jwt_secret
    return service


def start_process(argv: list[str], *, port: int, log_dir: Path, env: dict[str, str] | None = None,
                  cwd: Path | None = None, ready_path: str = "/", timeout: float = 90) -> RunningService:
    """Start a server process that listens on ``127.0.0.1:port`` and wait until
    ``ready_path`` answers 200. Output goes to a log file under ``log_dir``."""
    import httpx

    full_env = clean_env(**(env or {}))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"service-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                   start_new_session=True)
    service = RunningService(f"http://127.0.0.1:{port}", process, log_path, env=full_env)
    atexit.register(service.stop)  # also when the run is interrupted before teardown
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with status {process.returncode} before it was ready:\n{service.log_tail()}")
        try:
            last = httpx.get(service.url + ready_path, timeout=2)
            if last.status_code == 200:
                return service
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"the service was not ready after {timeout:.0f}s (last answer: {last!r}):\n{service.log_tail()}")


def kill_all(services: list[RunningService]) -> None:
    for service in services:
        try:
            service.stop()
        except Exception:  # teardown must stop every other server even if one misbehaves
            if service.process.poll() is None:
                os.killpg(service.process.pid, signal.SIGKILL)
