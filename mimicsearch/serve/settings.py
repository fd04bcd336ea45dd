"""What a server is started with: where it listens, who may call it, how much it accepts."""
from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeSettings:
    host: str = LOOPBACK
    port: int = 8000
    api_key: str | None = None  # None: no key asked for (loopback, or --no-auth)
    no_auth: bool = False  # an explicit choice to listen elsewhere without a key
    model_dir: str | None = None  # default: the model the index records
    threads: int | None = None
    verify: bool = True
    max_k: int = 100
    max_body_bytes: int = 1 << 20
    max_text_chars: int = 20_000
    max_inputs: int = 256
    # How long a batch may wait for requests already being handled (a lone request never
    # waits; under load the queue fills while a batch runs).
    batch_wait_ms: float = 5.0
    max_batch: int = 64  # texts per encoder call
    # A batch stops gathering at this many padded tokens (texts x the longest's tokens): a
    # CPU's GEMMs are saturated by a few hundred rows; beyond, batching only adds padding.
    batch_tokens: int = 256
    batching: bool = True  # False: one request per encoder call (the benchmark's baseline)
    cors_origins: tuple[str, ...] = ()
    log_level: str = "info"

    def __post_init__(self):
        if not 0 <= self.port < 65536:
            raise ValueError(f"port {self.port} is not a TCP port (0..65535)")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is empty")
        if self.max_k < 1:
            raise ValueError(f"max_k={self.max_k}: must be at least 1")
        if not is_loopback(self.host) and self.api_key is None and not self.no_auth:
            raise ValueError(
                f"--host {self.host} listens beyond this machine: give --api-key-file FILE "
                "(clients send 'Authorization: Bearer KEY'), or pass --no-auth to serve "
                "clinical notes to anyone who can reach the port")

    @property
    def auth(self) -> bool:
        return self.api_key is not None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_api_key(path: str | Path) -> str:
    """The key in `path` (surrounding whitespace dropped); refuses an empty file."""
    path = Path(path)
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the API key file {path}: {e}") from None
    if not key:
        raise ValueError(f"the API key file {path} is empty: put a long random key in it "
                         "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if len(key) < 16:
        raise ValueError(f"the API key in {path} has {len(key)} characters; use at least 16")
    return key


def key_file_warning(path: str | Path) -> str | None:
    """A warning when other users can read the key file."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"{path} is readable by other users; chmod 600 it"
    return None
