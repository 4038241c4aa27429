"""The routing parts of the YAML file: per-route deployments and per-key rate limits.

The values they become are in core/settings.py; errors are ConfigError naming the setting.

```yaml
routes:
  - name: gpt-image-1
    provider: openai
    deployments:                      # several accounts / base URLs of one model, least-busy
      - {base_url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY}"}
      - {name: backup, base_url: "https://proxy.example/v1", api_key: "${OPENAI_API_KEY_2}"}
    retry_on_timeout: false           # a sync upstream that timed out may have billed: don't resend
    fallback_on_client_error: false   # or [moderation_blocked, content_policy_violation]
limits:                               # per gateway key (or per caller key when no gateway keys)
  rpm: 60
  concurrent: 4
  keys:                               # optional overrides; keys only as ${VAR} references
    - {key: "${TEAM_A_GATEWAY_KEY}", rpm: 600, concurrent: 20}
```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.settings import ConfigError, DeploymentSettings, KeyLimit, LimitSettings
from .parse import is_ref


def check_key_refs(doc: Mapping[str, Any]) -> None:
    """Before ${VAR} expansion: provider, deployment and limit keys must be references, never literals."""
    for pname, p in (doc.get("providers") or {}).items():
        raw = p.get("api_key") if isinstance(p, dict) else None
        if raw is not None and not is_ref(raw):
            raise ConfigError(f"providers.{pname}.api_key must be a ${{VAR}} reference, not a literal key")
    for item in doc.get("routes") or []:
        if not isinstance(item, dict):
            continue
        for i, dep in enumerate(item.get("deployments") or []):
            raw = dep.get("api_key") if isinstance(dep, dict) else None
            if raw is not None and not is_ref(raw):
                raise ConfigError(f"route {item.get('name')}: deployments[{i}].api_key must be a ${{VAR}} "
                                  "reference, not a literal key")
    limits = doc.get("limits") or {}
    for i, entry in enumerate((limits.get("keys") if isinstance(limits, dict) else None) or []):
        raw = entry.get("key") if isinstance(entry, dict) else None
        if raw is None or not is_ref(raw):
            raise ConfigError(f"limits.keys[{i}].key must be a ${{VAR}} reference, not a literal key")


def parse_deployments(route: str, provider: str, raw: Any) -> tuple[DeploymentSettings, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"route {route}: deployments must be a list")
    out: list[DeploymentSettings] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"route {route}: deployments[{i}] must be a mapping")
        d = dict(item)
        label = str(d.pop("name", None) or f"{provider}#{i + 1}")
        if any(x.label == label for x in out):
            raise ConfigError(f"route {route}: two deployments are named {label!r}")
        base_url = d.pop("base_url", None)
        key = d.pop("api_key", None)
        timeout = d.pop("timeout_s", None)
        try:
            timeout_f = float(timeout) if timeout is not None else None
        except (TypeError, ValueError):
            raise ConfigError(f"route {route}: deployments[{i}].timeout_s must be a number") from None
        out.append(DeploymentSettings(label, str(base_url).rstrip("/") if base_url else None, str(key or "") or None,
                                      timeout_f, d))
    return tuple(out)


def _key_limit(where: str, raw: Mapping[str, Any]) -> KeyLimit:
    try:
        rpm = float(raw.get("rpm", 0) or 0)
        concurrent = int(raw.get("concurrent", 0) or 0)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: rpm and concurrent must be numbers") from None
    if rpm < 0 or concurrent < 0:
        raise ConfigError(f"{where}: rpm and concurrent must not be negative")
    return KeyLimit(rpm, concurrent)


def parse_limits(raw: Any) -> LimitSettings:
    if raw is None:
        return LimitSettings()
    if not isinstance(raw, dict):
        raise ConfigError("limits must be a mapping")
    unknown = set(raw) - {"rpm", "concurrent", "keys"}
    if unknown:
        raise ConfigError(f"limits: unknown field(s) {sorted(unknown)}; known: concurrent, keys, rpm")
    default = _key_limit("limits", raw)
    per_key: dict[str, KeyLimit] = {}
    for i, entry in enumerate(raw.get("keys") or []):
        if not isinstance(entry, dict) or not entry.get("key"):
            raise ConfigError(f"limits.keys[{i}] needs a key (an empty ${{VAR}} is not set in the environment)")
        per_key[str(entry["key"])] = _key_limit(f"limits.keys[{i}]", {"rpm": default.rpm,
                                                                       "concurrent": default.concurrent, **entry})
    return LimitSettings(default, per_key)
