"""Atomic bundle writing: replace, reject, recover from a killed run, refuse foreign folders."""

import json
import os

import pytest

from edgekit.bundle import check_output_dir, staged_bundle
from edgekit.errors import ConfigError


def _write(staging, text):
    (staging.path / "manifest.json").write_text(json.dumps({"v": text}))


def test_commit_replaces_an_existing_bundle_whole(tmp_path):
    out = tmp_path / "b"
    with staged_bundle(out) as staging:
        _write(staging, "one")
        (staging.path / "old-only.txt").write_text("x")
        staging.commit()
    with staged_bundle(out) as staging:
        _write(staging, "two")
        staging.commit()
    assert json.loads((out / "manifest.json").read_text()) == {"v": "two"}
    assert not (out / "old-only.txt").exists()  # a replacement, not a merge
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_an_error_while_staging_leaves_the_previous_bundle_and_no_temporaries(tmp_path):
    out = tmp_path / "b"
    with staged_bundle(out) as staging:
        _write(staging, "one")
        staging.commit()
    with pytest.raises(OSError, match="No space"):
        with staged_bundle(out) as staging:
            _write(staging, "half")
            raise OSError(28, "No space left on device")
    assert json.loads((out / "manifest.json").read_text()) == {"v": "one"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_reject_keeps_the_candidate_beside_the_bundle(tmp_path):
    out = tmp_path / "b"
    with staged_bundle(out) as staging:
        _write(staging, "bad")
        rejected = staging.reject()
    assert rejected.name == "b.rejected" and not out.exists()


def test_leftovers_of_a_killed_run_are_cleaned_or_restored(tmp_path):
    out = tmp_path / "b"
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    (tmp_path / f".b.edgekit-tmp-{dead}-abcd1234").mkdir()
    old = tmp_path / f".b.edgekit-old-{dead}-abcd1234"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"v": "previous"}))
    # Killed between moving the old bundle aside and moving the new one in: the old one comes back.
    with staged_bundle(out) as staging:
        assert json.loads((out / "manifest.json").read_text()) == {"v": "previous"}
        _write(staging, "new")
        staging.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_output_folders_that_are_not_bundles_are_refused(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match="not an edgekit bundle"):
        check_output_dir(tmp_path / "docs")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output_dir(tmp_path / "file")
    os.symlink(tmp_path / "docs", tmp_path / "link")
    with pytest.raises(ConfigError, match="symlink"):
        check_output_dir(tmp_path / "link")
