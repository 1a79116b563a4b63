"""runctl.agent.protection: the warnings for checkpoints runctl did not keep (pure), and the
bounded look at the working folder for checkpoint-like files."""

from __future__ import annotations

import os
from pathlib import Path

from runctl.agent.protection import common_folder, find_checkpoint_like, protection_warnings
from runctl.models import Attempt

FOLDER = ".runctl/jobs/j/checkpoints"


def ended(final=None, resumed_from=None) -> Attempt:
    return Attempt(0, 0.0, 5.0, exit_code=0, reason="completed", final_snapshot=final, resumed_from=resumed_from)


def test_no_snapshot_names_the_folder_the_variable_and_the_fix():
    (line,) = protection_warnings("j", [ended()], FOLDER, ())
    assert line == ("job j ended with no checkpoint in the store: nothing was written in its checkpoint folder "
                    ".runctl/jobs/j/checkpoints (RUNCTL_CHECKPOINT_DIR). Save checkpoints there, or point runctl "
                    'at the script\'s own folder: --checkpoint-dir checkpoints --resume-args "--resume {checkpoint}"')


def test_an_interrupted_job_was_interrupted_with_no_checkpoint():
    (line,) = protection_warnings("j", [ended()], FOLDER, (), "interrupted")
    assert line.startswith("job j was interrupted with no checkpoint in the store: ")


def test_the_fix_names_the_folder_the_script_wrote_in():
    first, second = protection_warnings("j", [ended()], FOLDER, ("out/ckpt/a.ckpt", "out/ckpt/b.ckpt"))
    assert first.endswith('--checkpoint-dir out/ckpt --resume-args "--resume {checkpoint}"')
    assert second.endswith(": out/ckpt/a.ckpt, out/ckpt/b.ckpt (use --checkpoint-dir out/ckpt)")


def test_a_snapshot_in_any_attempt_or_restored_means_no_first_warning():
    assert protection_warnings("j", [ended(final=3)], FOLDER, ()) == ()
    assert protection_warnings("j", [ended(), ended(resumed_from=2)], FOLDER, ()) == ()


def test_files_outside_the_folder_are_named_even_when_the_store_has_a_snapshot():
    (line,) = protection_warnings("j", [ended(final=1)], FOLDER, ("model.safetensors",))
    assert "model.safetensors (save them in a folder of their own and use --checkpoint-dir FOLDER)" in line


def test_many_files_are_counted_not_listed():
    found = tuple(f"c/{i}.pt" for i in range(8))
    (line,) = protection_warnings("j", [ended(final=1)], FOLDER, found)
    assert "c/4.pt and 3 more (use --checkpoint-dir c)" in line and "c/5.pt" not in line


def test_common_folder():
    assert common_folder(["a/b/x.pt", "a/c/y.pt"]) == "a"
    assert common_folder(["out/checkpoint-500/"]) == "out"
    assert common_folder(["x.pt", "a/y.pt"]) == "" and common_folder([]) == ""


def test_the_scan_finds_recent_checkpoint_like_files_outside_the_skipped_places(tmp_path):
    for name in ("checkpoints/last.pt", "out/checkpoint-500/model.bin", "model.safetensors", "notes.txt",
                 ".runctl/jobs/j/checkpoints/a.pt", ".git/x.pt", "mine/kept.pt", "old.ckpt",
                 "node_modules/x.pt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    os.utime(tmp_path / "old.ckpt", (1000.0, 1000.0))  # from before the run
    found = find_checkpoint_like(tmp_path, since=1_000_000.0, skip=(tmp_path / "mine",))
    assert found == ("model.safetensors", "checkpoints/last.pt", "out/checkpoint-500/")


def test_the_scan_names_paths_relative_to_a_relative_root(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "m.pt").write_text("x")
    monkeypatch.chdir(tmp_path / "out")
    assert find_checkpoint_like(Path(".."), since=0.0) == ("out/m.pt",)


def test_the_scan_is_bounded(tmp_path):
    deep = tmp_path / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    (deep / "x.pt").write_text("x")
    assert find_checkpoint_like(tmp_path, since=0.0) == ()  # deeper than 4 levels
    assert find_checkpoint_like(tmp_path, since=0.0, max_depth=6) == ("a/b/c/d/e/x.pt",)
    for i in range(20):
        (tmp_path / f"f{i:02}.pt").write_text("x")
    # Five entries looked at: the folder a/, then four files; a/'s insides never.
    assert find_checkpoint_like(tmp_path, since=0.0, max_entries=5) == tuple(f"f{i:02}.pt" for i in range(4))
