"""Everything a running gateway holds, built from one Config snapshot."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from .config import Config
from .engine.engine import Engine
from .media.deliver import Deliverer, new_download_session
from .media.store import LocalImageStore
from .providers.base import Provider
from .providers.registry import PROVIDER_CLASSES
from .routing.router import Router


class Runtime:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.started = int(time.time())
        self.providers: dict[str, Provider] = {n: cls(cfg.providers[n]) for n, cls in PROVIDER_CLASSES.items()}
        self.engine = Engine()
        self.router = Router(cfg, self.providers, self.engine)
        self.store = LocalImageStore(cfg.data_dir / "images", cfg.image_ttl_s)
        self._download: aiohttp.ClientSession | None = None
        self.deliverer = Deliverer(self.store, self.download_session, cfg.download_max_bytes, cfg.download_timeout_s)
        self.extras: dict[str, Any] = {}

    def download_session(self) -> aiohttp.ClientSession:
        if self._download is None or self._download.closed:
            self._download = new_download_session()
        return self._download

    def usable_providers(self) -> list[str]:
        out = []
        for name, p in self.providers.items():
            if not p.capabilities.needs_key or self.cfg.providers[name].api_key:
                out.append(name)
        return out

    async def close(self) -> None:
        for p in self.providers.values():
            await p.close()
        if self._download is not None:
            await self._download.close()
