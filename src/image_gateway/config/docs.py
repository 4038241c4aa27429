"""`.env.example` and the README's configuration and route tables, generated from the settings table
and the provider registry (tests/test_settings_docs.py fails when the committed files are stale).

    python -m image_gateway.config.docs --write     # or: image-gateway docs --write
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..providers.registry import PROVIDER_CLASSES
from .table import Setting, all_settings

ENV_HEADER = """\
# Image AIGC Gateway: every environment variable, with a comment.
# Generated from src/image_gateway/config/table.py (`image-gateway docs --write`); do not edit by hand.
# Copy to `.env` and fill in what you use. Precedence: environment > .env > YAML file > defaults.
# The gateway ships no keys and never writes one to disk, a log line, a task record or an error.
"""
MARKERS = {"settings": "readme_settings", "routes": "readme_routes"}


def shown(row: Setting) -> str:
    """The default as the docs print it."""
    if row.shown is not None:
        return row.shown
    value: Any = row.value_default
    if value is None or value == "" or value == () or value == frozenset():
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def env_example() -> str:
    out = [ENV_HEADER.rstrip("\n")]
    section = None
    for row in all_settings():
        if not row.env:
            continue
        if row.section != section:
            section = row.section
            out.append(f"\n# --- {section} " + "-" * max(3, 72 - len(section)))
        out.append(f"# {row.doc}")
        default = shown(row)
        if row.example is not None or row.type == "secret" or default == "–" or row.shown is not None:
            out.append(f"# {row.env}={row.example or ''}")
        else:
            out.append(f"{row.env}={default}")
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(value: str, row: Setting | None = None) -> str:
    return value if value == "–" or (row is not None and row.shown) else f"`{value}`"


def readme_settings() -> str:
    rows = list(all_settings())
    out = ["| variable | YAML key | default | meaning |", "|---|---|---|---|"]
    out += [f"| `{r.env}` | {_code(r.yaml) if r.yaml else '–'} | {_code(shown(r), r)} | {_cell(r.doc)} |"
            for r in rows if r.env]
    out += ["", "Set only in the YAML file:", "", "| YAML key | default | meaning |", "|---|---|---|"]
    out += [f"| `{r.yaml}` | {_code(shown(r), r)} | {_cell(r.doc)} |" for r in rows if not r.env and r.yaml]
    return "\n".join(out)


def _summary(cls: Any) -> str:
    """The class's docstring, else its module's: first line, up to a colon."""
    doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or cls.__name__).strip().splitlines()[0]
    return doc.split(": ")[0].rstrip(".")


def readme_routes() -> str:
    out = ["| provider | upstream | built-in routes (→ upstream model) | variables |", "|---|---|---|---|"]
    for name, cls in PROVIDER_CLASSES.items():
        routes = []
        for spec in cls.builtin_routes:
            text = f"`{spec.name}`" + (f" → `{spec.upstream_model}`" if spec.upstream_model != spec.name else "")
            routes.append(text + (f" (alias {', '.join(f'`{a}`' for a in spec.aliases)})" if spec.aliases else ""))
        names = (cls.key_variable(), *cls.key_env_aliases, cls.base_url_variable(), *cls.option_envs)
        env = ", ".join(f"`{v}`" for v in names) if cls.capabilities.needs_key else "– (no key)"
        if not cls.capabilities.needs_key and not cls.default_base_url.startswith("local://"):  # self-hosted
            env = f"`{cls.base_url_variable()}`, optional `{cls.key_variable()}`"
        out.append(f"| `{name}` | {_cell(_summary(cls))} | {', '.join(routes)} | {env} |")
    return "\n".join(out)


def update_readme(text: str) -> str:
    """The README with each generated section (between `<!-- NAME:begin -->` and `<!-- NAME:end -->`) renewed."""
    for marker, fn in MARKERS.items():
        body = globals()[fn]()
        pattern = re.compile(rf"(<!-- {marker}:begin -->\n).*?(<!-- {marker}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README has no <!-- {marker}:begin --> / <!-- {marker}:end --> markers")
        text = pattern.sub(lambda m: m[1] + body + "\n" + m[2], text)  # noqa: B023 (used at once)
    return text


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image-gateway docs", description=__doc__.splitlines()[0])
    parser.add_argument("--env-example", action="store_true", help="print .env.example")
    parser.add_argument("--readme", action="store_true", help="print README.md with its tables renewed")
    parser.add_argument("--write", action="store_true", help="rewrite .env.example and README.md here")
    parser.add_argument("--root", default=".", help="where .env.example and README.md are (for --write)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    root = Path(args.root)
    if args.write:
        (root / ".env.example").write_text(env_example(), encoding="utf-8")
        readme = root / "README.md"
        readme.write_text(update_readme(readme.read_text(encoding="utf-8")), encoding="utf-8")
    elif args.readme:
        sys.stdout.write(update_readme((root / "README.md").read_text(encoding="utf-8")))
    else:
        sys.stdout.write(env_example())
    return 0


if __name__ == "__main__":
    sys.exit(main())
