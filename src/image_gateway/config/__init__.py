"""The loader: environment, `.env` and YAML into a Config (core/settings.py). Only app, cli and
reload import it; the rest of the gateway reads the values in core/settings.py."""

from ..core.settings import ConfigError
from .loader import load_config, merged_env

__all__ = ["ConfigError", "load_config", "merged_env"]
