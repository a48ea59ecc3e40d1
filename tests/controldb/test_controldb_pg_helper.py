from __future__ import annotations

from pathlib import Path

import pg
import pytest


def test_missing_postgres_binaries_are_reported_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg, "DEBIAN_POSTGRES_ROOT", tmp_path)

    with pytest.raises(FileNotFoundError, match="apt-get install postgresql"):
        pg.find_postgres_bin_dir()


def test_the_newest_postgres_version_is_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for version in ("9", "15", "16"):
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / "initdb").touch()
    monkeypatch.setattr(pg, "DEBIAN_POSTGRES_ROOT", tmp_path)

    assert pg.find_postgres_bin_dir() == tmp_path / "16" / "bin"
