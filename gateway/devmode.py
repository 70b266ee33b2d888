"""Development secrets: random values for unset ${VAR}s, kept in a file only the user can read.

Used by `serve --dev` (which creates them) and by `simulate` (which reads them), so a fresh
clone runs without a provider account and without any secret shipped in the repository.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

FILE_NAME = ".status-gateway-dev.env"


def dev_file(config_path: Path) -> Path:
    return config_path.resolve().parent / FILE_NAME


def read_dev_secrets(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def ensure_dev_secrets(path: Path, names: set[str]) -> dict[str, str]:
    """The dev values for `names`, generating the ones the file does not have yet (mode 0600)."""
    values = read_dev_secrets(path)
    new = {name: secrets.token_urlsafe(32) for name in sorted(names) if name not in values}
    if new:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            if not values:
                out.write("# status-gateway development secrets: NOT for production. Delete to regenerate.\n")
            out.writelines(f"{name}={value}\n" for name, value in new.items())
        os.chmod(path, 0o600)
        values.update(new)
    return {name: values[name] for name in names}


def unset(names: set[str]) -> set[str]:
    return {name for name in names if not os.environ.get(name)}
