"""Who owns a task: a keyed fingerprint of the caller's credential, never the credential itself.

A task belongs to the caller that created it: the gateway key it presented, or, on a gateway
without keys of its own, the provider key it brought. The record keeps HMAC-SHA256(secret,
credential) so a stolen task database reveals no key, and fingerprints cannot be precomputed
without the secret. The secret is `TASK_OWNER_SECRET`, else 32 random bytes generated into
`DATA_DIR/task_owner.secret` (mode 0600) on first start and reused after. It never reaches a log.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("image_gateway.engine")
SECRET_FILE = "task_owner.secret"


class Owners:
    def __init__(self, path: Path | None = None, secret: str | None = None) -> None:
        self.path = path  # None (and no secret): an ephemeral secret, for tests and memory-only stores
        self._secret: bytes | None = secret.encode() if secret else None
        self._configured = bool(secret)

    @property
    def configured(self) -> bool:
        """The secret was given (TASK_OWNER_SECRET), not generated into this process's DATA_DIR."""
        return self._configured

    def load(self) -> None:
        """Read (or create) the secret file; a no-op when the secret is configured or already loaded."""
        if self._secret is None:
            self._secret = _read_or_create(self.path) if self.path is not None else os.urandom(32)

    def of(self, credential: str | None) -> str:
        """The fingerprint of a credential ("" for a caller that presented none)."""
        if self._secret is None:
            self.load()
        assert self._secret is not None
        return hmac.new(self._secret, (credential or "").encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def same(stored: str | None, fingerprint: str | None) -> bool:
        """Constant-time equality; a task without an owner (older records) belongs to nobody."""
        return stored is not None and fingerprint is not None and hmac.compare_digest(stored, fingerprint)


def _read_or_create(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole to a private temp file, then linked into place: the real name never holds a
        # half-written secret, and of two processes starting at once, one wins and both read it.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("task owner secret created", extra={"path": str(path)})
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # someone widened it: the secret is only ever for this process
        log.warning("task owner secret file was readable by others; permissions reset to 0600",
                    extra={"path": str(path)})
    value = path.read_text().strip()
    if len(value) < 32:
        raise RuntimeError(f"{path} is truncated or empty: remove it (tasks' owners are then forgotten) or "
                           "set TASK_OWNER_SECRET")
    return value.encode()
