"""Atomic bundle writing: replace, reject, recover from a killed run, never delete a user's file."""

import json
import os

import pytest

import edgekit.runtime as ekr
from edgekit import bundle
from edgekit.bundle import check_output_dir, output_lock, staged_bundle
from edgekit.errors import ConfigError

DEAD_PID = 2 ** 22 + 12345  # above the default pid_max: no such process


def _manifest(folder, text, files=()):
    """A minimal manifest that parses as an edgekit manifest, with the files' real hashes."""
    tensor = {"name": "x", "shape": [None, 4], "dtype": "float32", "layout": None}
    digest = {name: ekr.sha256_file(folder / name) for name in [*files, "reference.npz"]}
    return json.dumps({
        "schema_version": 1, "v": text, "inputs": [tensor], "outputs": ["x"],
        "default_artifact": None,
        "reference": {"file": "reference.npz", "outputs": ["x"], "sha256": digest["reference.npz"]},
        "artifacts": [{"id": f"a{i}", "format": "onnx", "precision": "fp32", "scheme": "fp32", "file": f,
                       "sha256": digest[f], "size_bytes": 1, "inputs": [tensor], "outputs": [tensor],
                       "parity": {"passed": True, "failures": []}}
                      for i, f in enumerate(files)]})


def _write(folder, text, files=("model.onnx",)):
    for name in files:
        (folder / name).write_text(text)
    (folder / "reference.npz").write_text(text)
    (folder / "manifest.json").write_text(_manifest(folder, text, files))


def _export(out, text, files=("model.onnx",)):
    check_output_dir(out)
    with staged_bundle(out) as staging:
        _write(staging.path, text, files)
        return staging.commit()


def _user_folder(folder, files):
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return {name: text for name, text in files.items()}


def _unchanged(folder, files):
    return all((folder / name).read_text() == text for name, text in files.items())


def test_commit_replaces_an_existing_bundle_whole(tmp_path):
    out = tmp_path / "b"
    _export(out, "one", files=("model.onnx", "old-only.tflite"))
    _export(out, "two")
    assert json.loads((out / "manifest.json").read_text())["v"] == "two"
    assert not (out / "old-only.tflite").exists()  # a replacement, not a merge
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_the_swap_is_one_atomic_exchange_on_linux(tmp_path, monkeypatch):
    if bundle._renameat2() is None:
        pytest.skip("no renameat2 on this OS")
    out = tmp_path / "b"
    _export(out, "one")
    renames = []
    real_rename = os.rename
    monkeypatch.setattr(bundle.os, "rename", lambda a, b: (renames.append((str(a), str(b))), real_rename(a, b)))
    _export(out, "two")
    # No rename moves the old bundle away from OUT: there is never a moment without a bundle there.
    assert not any(src == str(out) for src, _ in renames)
    assert json.loads((out / "manifest.json").read_text())["v"] == "two"


def test_an_error_while_staging_leaves_the_previous_bundle_and_no_temporaries(tmp_path):
    out = tmp_path / "b"
    _export(out, "one")
    with pytest.raises(OSError, match="No space"):
        with staged_bundle(out) as staging:
            _write(staging.path, "half")
            raise OSError(28, "No space left on device")
    assert json.loads((out / "manifest.json").read_text())["v"] == "one"
    assert [p.name for p in tmp_path.iterdir() if "edgekit-tmp" in p.name or "edgekit-old" in p.name] == []


def test_reject_keeps_the_candidate_beside_the_bundle(tmp_path):
    out = tmp_path / "b"
    with staged_bundle(out) as staging:
        _write(staging.path, "bad")
        rejected = staging.reject()
    assert rejected.name == "b.rejected" and not out.exists()


def test_leftovers_of_a_killed_run_are_cleaned_or_restored(tmp_path):
    out = tmp_path / "b"
    (tmp_path / f".b.edgekit-tmp-{DEAD_PID}-abcd1234").mkdir()
    old = tmp_path / f".b.edgekit-old-{DEAD_PID}-abcd1234"
    old.mkdir()
    _write(old, "previous")
    # Killed between moving the old bundle aside and moving the new one in: the old one comes back.
    with staged_bundle(out) as staging:
        assert json.loads((out / "manifest.json").read_text())["v"] == "previous"
        _write(staging.path, "new")
        staging.commit()
    assert not [p for p in tmp_path.iterdir() if ".edgekit-tmp-" in p.name or ".edgekit-old-" in p.name]


def test_output_folders_that_are_not_bundles_are_refused(tmp_path):
    docs = _user_folder(tmp_path / "docs", {"thesis.tex": "x"})
    with pytest.raises(ConfigError, match="did not write"):
        check_output_dir(tmp_path / "docs")
    assert _unchanged(tmp_path / "docs", docs)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output_dir(tmp_path / "file")
    os.symlink(tmp_path / "docs", tmp_path / "link")
    with pytest.raises(ConfigError, match="symlink"):
        check_output_dir(tmp_path / "link")
    with pytest.raises(ConfigError, match="root"):
        check_output_dir("/")


@pytest.mark.parametrize("manifest", [
    '{"name": "my-web-app", "start_url": "/", "icons": []}',   # a web app manifest
    '{"schema_version": 1, "artifacts": "not a list"}',
    "not json at all",
])
def test_a_folder_with_some_other_manifest_json_is_not_a_bundle(tmp_path, manifest):
    """`--out .` in a web project or a home folder must not delete it."""
    project = _user_folder(tmp_path / "home", {"manifest.json": manifest, "app.js": "code", "src/index.js": "more",
                                                ".bashrc": "alias"})
    with pytest.raises(ConfigError, match="did not write"):
        check_output_dir(tmp_path / "home")
    assert _unchanged(tmp_path / "home", project)


def test_reexport_never_deletes_files_the_manifest_does_not_own(tmp_path):
    out = tmp_path / "b"
    _export(out, "one")
    data = _user_folder(out, {"calib.npz": "user data", "model.keras": "user model"})
    with pytest.raises(ConfigError, match=r"did not write \(calib.npz, model.keras\)"):
        check_output_dir(out)
    assert _unchanged(out, data)
    # Files that appear while an export runs: the swap checks again and refuses, the bundle stays.
    (out / "calib.npz").unlink()
    (out / "model.keras").unlink()
    with pytest.raises(ConfigError, match="did not write"):
        with staged_bundle(out) as staging:
            _write(staging.path, "two")
            _user_folder(out, {"notes.txt": "mine"})
            staging.commit()
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "manifest.json").read_text())["v"] == "one"


def test_removing_an_old_bundle_deletes_only_the_files_it_owned(tmp_path):
    old = tmp_path / "old-copy"
    _user_folder(old, {"mine.txt": "keep me"})
    _write(old, "one")
    assert not bundle.remove_owned(old, bundle.owned_files(old))
    assert sorted(p.name for p in old.iterdir()) == ["mine.txt"]


def test_a_user_folder_named_like_the_rejected_candidate_is_refused(tmp_path):
    rejected = _user_folder(tmp_path / "b.rejected", {"results.csv": "precious"})
    with pytest.raises(ConfigError, match="b.rejected holds files edgekit did not write"):
        check_output_dir(tmp_path / "b")
    assert _unchanged(tmp_path / "b.rejected", rejected)


def test_glob_characters_in_out_are_literal(tmp_path):
    """`--out 'm*'` must not clean up another bundle's leftovers (m1's backup from a killed run)."""
    other_old = tmp_path / f".m1.edgekit-old-{DEAD_PID}-abcd1234"
    other_old.mkdir()
    _write(other_old, "m1 backup")
    for name in ("m*", "m[1]", "m?"):
        _export(tmp_path / name, "glob")
    assert json.loads((other_old / "manifest.json").read_text())["v"] == "m1 backup"
    assert not (tmp_path / "m1").exists()


def test_a_second_export_to_the_same_folder_is_a_clear_error(tmp_path):
    out = tmp_path / "b"
    with output_lock(out):
        with pytest.raises(ConfigError, match="another export is writing"):
            with output_lock(out):
                pass
    with output_lock(out):  # released
        pass


def test_a_file_edited_inside_the_bundle_is_not_owned_any_more(tmp_path):
    out = tmp_path / "b"
    _export(out, "one")
    (out / "model.onnx").write_text("my hand-tuned model")
    with pytest.raises(ConfigError, match=r"did not write \(model.onnx\)"):
        check_output_dir(out)
    assert (out / "model.onnx").read_text() == "my hand-tuned model"


def test_a_folder_swapped_for_a_symlink_during_the_swap_never_loses_the_targets_files(tmp_path, monkeypatch):
    """OUT replaced by a link to a user folder between the last check and the swap: the link is moved,
    the files behind it stay."""
    out = tmp_path / "b"
    _export(out, "one")
    user = tmp_path / "user"
    user.mkdir()
    _write(user, "user files")  # even files that look like a bundle's
    real_exchange = bundle.exchange

    def swap_then_exchange(a, b):
        os.rename(out, tmp_path / "moved-away")
        os.symlink(user, out)
        return real_exchange(a, b)
    monkeypatch.setattr(bundle, "exchange", swap_then_exchange)
    with staged_bundle(out) as staging:
        _write(staging.path, "two")
        staging.commit()
    assert (user / "model.onnx").read_text() == "user files" and (user / "manifest.json").is_file()


def test_the_two_rename_fallback_replaces_and_keeps_late_files(tmp_path, monkeypatch):
    """Where the OS has no atomic exchange; files that appear in the old bundle at the last moment
    are kept under OUT.kept-*, not deleted."""
    out = tmp_path / "b"
    _export(out, "one")
    monkeypatch.setattr(bundle, "exchange", lambda a, b: False)
    real_check = bundle._check_replaceable

    def check_then_late_file(path):
        real_check(path)
        if path == out:
            (out / "late.txt").write_text("written during the swap")
    monkeypatch.setattr(bundle, "_check_replaceable", check_then_late_file)
    with staged_bundle(out) as staging:
        _write(staging.path, "two")
        staging.commit()
    assert json.loads((out / "manifest.json").read_text())["v"] == "two"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("b.kept-")]
    assert len(kept) == 1 and sorted(p.name for p in kept[0].iterdir()) == ["late.txt"]


def test_leftovers_with_absurd_pids_do_not_break_exports(tmp_path):
    (tmp_path / ".b.edgekit-tmp-99999999999999999999-abcd1234").mkdir()
    _export(tmp_path / "b", "one")
    assert not (tmp_path / ".b.edgekit-tmp-99999999999999999999-abcd1234").exists()
