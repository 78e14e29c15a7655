"""Content hashes: a frame's hash follows its content (values, column names, dtypes, row order), never its index."""

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mlplatform_assets.lib.data.hashing import bytes_sha256, code_version, frame_sha256

BASE = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def test_bytes_sha256_is_the_standard_digest():
    assert bytes_sha256(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_frame_hash_ignores_the_index_and_is_stable():
    assert frame_sha256(BASE) == frame_sha256(BASE.set_axis([10, 11, 12]))
    assert frame_sha256(BASE) == frame_sha256(BASE.copy())
    assert re.fullmatch(r"[0-9a-f]{64}", frame_sha256(BASE))


@pytest.mark.parametrize("changed", [
    BASE.assign(a=[1, 2, 4]),                      # a value
    BASE.rename(columns={"b": "c"}),               # a column name
    BASE.astype({"a": "float64"}),                 # a dtype, same numbers
    BASE.iloc[::-1].reset_index(drop=True),        # row order
    BASE.iloc[:2],                                 # a row fewer
    BASE[["b", "a"]],                              # column order
])
def test_frame_hash_changes_with_content(changed):
    assert frame_sha256(changed) != frame_sha256(BASE)


def test_empty_frames_differ_by_columns():
    assert frame_sha256(pd.DataFrame()) != frame_sha256(pd.DataFrame({"a": []}))
    assert frame_sha256(BASE.iloc[0:0]) == frame_sha256(BASE.iloc[0:0].copy())


def test_code_version_is_the_checkout_commit():
    repo = Path(__file__).resolve().parents[3]

    def head() -> str:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()

    before = head()
    version = code_version()
    # Others may commit in between in a shared checkout: either commit is right.
    assert re.fullmatch(rf"git:({before}|{head()})(-dirty)?", version), version
