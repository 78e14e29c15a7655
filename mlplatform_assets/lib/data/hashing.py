"""Content hashes that identify data and code exactly."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pandas as pd


def frame_sha256(df: pd.DataFrame) -> str:
    """Hash of a frame's content, column names and dtypes; independent of the index."""
    h = hashlib.sha256()
    h.update("|".join(f"{c}:{df[c].dtype}" for c in df.columns).encode())
    if len(df.columns) and len(df):
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    h.update(str(len(df)).encode())
    return h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_version() -> str:
    """The git commit of the checkout the code runs from, else the package version."""
    from mlplatform_assets import __version__

    repo = Path(__file__).resolve().parents[3]
    if (repo / ".git").exists():
        try:
            sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                 text=True, timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return f"git:{sha}{'-dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass
    return f"mlplatform=={__version__}"
