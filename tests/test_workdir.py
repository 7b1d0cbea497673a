"""Stage directories: manifests last, atomic writes, locks, --force."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from falsecli.core import files, layout, manifest
from falsecli.core.errors import FalseCliError
from falsecli.core.manifest import Stage
from falsecli.core.swap import StageComplete, stage_run

CFG = {"train": {"epochs": 1}}


def test_manifest_has_the_spec_fields(tmp_path: Path) -> None:
    with stage_run(tmp_path, "heatmap", CFG, seed=3, device="cpu") as run:
        files.save_npy(run.out("a.npy"), np.arange(3))
        files.write_json(run.out("sub/b.json"), {"x": 1})
    manifest = json.loads((tmp_path / "heatmap" / "manifest.json").read_text())
    for key in ("stage", "status", "falsecli_version", "config", "inputs", "outputs", "seed",
                "device", "versions", "started", "finished", "wall_seconds"):
        assert key in manifest
    assert manifest["status"] == "complete" and manifest["outputs"] == ["a.npy", "config.yaml", "sub/b.json"]
    assert manifest["config"] == CFG and manifest["seed"] == 3
    assert set(manifest["versions"]) >= {"python", "torch", "torchvision", "numpy", "segyio",
                                         "cuda"}


def test_upstream_digest_and_missing_upstream(tmp_path: Path) -> None:
    with pytest.raises(FalseCliError, match=r"no training run in .*run 'falsecli train -w"):
        with stage_run(tmp_path, "heatmap", CFG, upstream=[Stage(tmp_path, "train")]):
            pass
    assert not (tmp_path / "heatmap" / "manifest.json").exists()
    with stage_run(tmp_path, "train", CFG):
        pass
    with stage_run(tmp_path, "heatmap", CFG, upstream=[Stage(tmp_path, "train")]) as run:
        pass
    assert run.inputs == {"train": Stage(tmp_path, "train").digest()}


def test_staleness_follows_content_not_timestamps(tmp_path: Path) -> None:
    """A redo that writes the same bytes (npz included) leaves downstream fresh; a redo with
    another result makes it stale."""
    def heatmap(values: list[int], seed: int) -> None:
        # another seed (like another time) changes the manifest, not the content
        with stage_run(tmp_path, "heatmap", CFG, force=True, seed=seed) as run:
            files.save_npz(run.out("forgetting.npz"), a=np.array(values, dtype=np.uint16))
            files.write_text(run.out("summary.csv"), "section,events\n")

    heatmap([1, 2], 0)
    with stage_run(tmp_path, "rank", CFG, upstream=[Stage(tmp_path, "heatmap")]):
        pass
    first = json.loads((tmp_path / "heatmap" / "manifest.json").read_text())
    heatmap([1, 2], 1)
    again = json.loads((tmp_path / "heatmap" / "manifest.json").read_text())
    assert again["seed"] != first["seed"]
    assert again["digest"] == first["digest"]
    assert Stage(tmp_path, "rank").is_fresh(["heatmap"])
    heatmap([1, 3], 1)
    assert not Stage(tmp_path, "rank").is_fresh(["heatmap"])


def test_content_digest_covers_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "b").write_bytes(b"x")
    digest = manifest.content_digest(tmp_path, ["a"])
    assert digest == manifest.content_digest(tmp_path, ["a", "a"])
    assert digest != manifest.content_digest(tmp_path, ["b"])  # same bytes, other file
    (tmp_path / "a").write_bytes(b"y")
    assert digest != manifest.content_digest(tmp_path, ["a"])


def test_complete_stage_is_refused_without_force(tmp_path: Path) -> None:
    with stage_run(tmp_path, "rank", CFG) as run:
        files.write_text(run.out("ranking.csv"), "old")
    with pytest.raises(StageComplete, match="--force"):
        with stage_run(tmp_path, "rank", CFG):
            pass
    assert (tmp_path / "rank" / "ranking.csv").read_text() == "old"
    with stage_run(tmp_path, "rank", CFG, force=True) as run:
        assert not (run.path / "ranking.csv").exists()  # a redo starts clean, beside the old
        assert (tmp_path / "rank" / "ranking.csv").read_text() == "old"
        files.write_text(run.out("ranking.csv"), "new")
    assert Stage(tmp_path, "rank").is_complete() and run.path == tmp_path / "rank"
    assert (tmp_path / "rank" / "ranking.csv").read_text() == "new"
    assert not any((tmp_path / ".falsecli" / "redo").iterdir())


def test_failure_inside_a_stage_leaves_no_manifest(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with stage_run(tmp_path, "rank", CFG) as run:
            files.write_text(run.out("ranking.csv"), "half")
            raise RuntimeError("boom")
    assert not Stage(tmp_path, "rank").is_complete()


def test_killed_redo_does_not_look_complete(tmp_path: Path) -> None:
    with stage_run(tmp_path, "rank", CFG):
        pass
    script = textwrap.dedent(f"""
        import os, signal, time
        from falsecli.core.swap import stage_run
        with stage_run({str(tmp_path)!r}, "rank", {{}}, force=True) as run:
            (run.path / "started").write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    # the redo was built beside the complete result, which is untouched
    assert Stage(tmp_path, "rank").is_complete() and not (tmp_path / "rank" / "started").exists()
    assert (Stage(tmp_path, "rank").redo_path / "started").exists()
    # the lock died with the process: the stage can be redone, and the leftover goes
    with stage_run(tmp_path, "rank", CFG, force=True):
        assert not (Stage(tmp_path, "rank").redo_path / "started").exists()
    assert not any((tmp_path / ".falsecli" / "redo").iterdir())


def test_second_process_is_locked_out(tmp_path: Path) -> None:
    with stage_run(tmp_path, "train", CFG):
        script = f"from falsecli.core.swap import stage_run\n" \
                 f"with stage_run({str(tmp_path)!r}, 'train', {{}}): pass"
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert proc.returncode != 0
        assert "another falsecli process is writing" in proc.stderr


def test_atomic_write_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    files.write_json(target, {"v": 1})

    def broken(path: Path) -> None:
        path.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(FalseCliError, match=r"x\.json: disk full — check the path"):
        files.save_with(target, broken)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left


def test_default_workdir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALSECLI_WORKDIR", "/tmp/somewhere")
    assert layout.default_workdir() == Path("/tmp/somewhere")
    monkeypatch.delenv("FALSECLI_WORKDIR")
    assert layout.default_workdir() == Path("falsecli-work")


def test_save_npz_round_trip(tmp_path: Path) -> None:
    arrays = {"inline_0000": np.arange(12, dtype=np.uint16).reshape(3, 4),
              "crossline_0005": np.ones((2, 2), dtype=bool)}
    files.save_npz(tmp_path / "m.npz", **arrays)
    with np.load(tmp_path / "m.npz") as back:
        assert list(back) == list(arrays)
        for name, array in arrays.items():
            assert back[name].dtype == array.dtype and np.array_equal(back[name], array)


def test_missing_nested_heatmap_names_its_command(tmp_path: Path) -> None:
    with pytest.raises(FalseCliError, match="heatmap --run retrain/flip/seed0"):
        Stage(tmp_path, "retrain/flip/seed0/heatmap").require("report")


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    files.write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_scratch_files_go_after_the_manifest_while_the_stage_is_locked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint is removed only once the manifest is written, and before the lock is
    released (a concurrent --force must not lose its own checkpoint)."""
    stage = Stage(tmp_path, "train")
    seen = []
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path.name == "checkpoint.pt":
            seen.append((stage.is_complete(), stage.busy()))
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with stage_run(tmp_path, "train", CFG) as run:
        run.temp("checkpoint.pt").write_bytes(b"state")
    assert seen == [(True, True)] and not (stage.path / "checkpoint.pt").exists()


def test_leftover_temporary_files_are_removed_nested_stages_kept(tmp_path: Path) -> None:
    with stage_run(tmp_path, "retrain/flip/seed0", CFG):
        pass
    with stage_run(tmp_path, "retrain/flip/seed0/heatmap", CFG) as run:
        files.write_text(run.out("summary.csv"), "x")
    run_dir = tmp_path / "retrain/flip/seed0"
    orphan = run_dir / "tracking" / ".correct.npy.abcd1234.tmp.npy"
    orphan.parent.mkdir()
    orphan.write_bytes(b"half")
    nested_tmp = run_dir / "heatmap" / ".x.abcd1234.tmp.npz"
    nested_tmp.write_bytes(b"another process's write")
    with stage_run(tmp_path, "retrain/flip/seed0", CFG, force=True):
        pass
    assert not orphan.exists() and not (run_dir / "tracking").exists()
    # the run's heat maps were carried over into the new run folder, their files untouched
    assert (run_dir / "heatmap" / "summary.csv").read_text() == "x" and nested_tmp.exists()
    assert Stage(tmp_path, "retrain/flip/seed0/heatmap").is_complete()


def test_read_only_refusal_and_corrupt_manifest(tmp_path: Path) -> None:
    with stage_run(tmp_path, "rank", CFG) as run:
        files.write_text(run.out("ranking.csv"), "old")
    (tmp_path / "rank" / "manifest.json").write_text('{"status": "complete"}')
    with pytest.raises(FalseCliError, match="no stage .* use --force|redo it with --force"):
        with stage_run(tmp_path, "rank", CFG):
            pass
    assert (tmp_path / "rank" / "ranking.csv").read_text() == "old"
    with stage_run(tmp_path, "rank", CFG, force=True) as run:  # --force replaces it, whole
        files.write_text(run.out("ranking.csv"), "new")
    assert Stage(tmp_path, "rank").is_complete()


@pytest.mark.parametrize("n, said", [(0, "0 bytes"), (999, "999 bytes"), (1000, "1.0 kB"),
                                     (262_316, "262.3 kB"), (1_500_000_000, "1.5 GB"),
                                     (2 * 10**15, "2000.0 TB")])
def test_space_is_said_in_units_people_read(n: int, said: str) -> None:
    assert files.size_text(n) == said


def test_an_out_folder_replaces_the_old_one_whole_and_leaves_nothing_beside(tmp_path) -> None:
    """A failed build leaves the old folder and nothing beside it; a leftover of a killed
    build is removed by the next one; a complete folder a killed swap had set aside comes
    back; a finished build replaces the folder as a whole."""
    from falsecli.core.swap import out_folder, partial_path

    out = tmp_path / "o"
    (out / "old.txt").parent.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(FalseCliError, match=f"{out}/a: broken"):
        with out_folder(out, "predict") as tmp:
            raise FalseCliError(f"{tmp}/a: broken")  # named as the user will find it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    partial_path(out).mkdir()
    (partial_path(out) / "half.npy").write_text("half")
    os.replace(out, tmp_path / ".o.old")  # killed between the two renames of a swap
    with out_folder(out, "predict") as tmp:
        assert sorted(p.name for p in tmp.iterdir()) == []  # the killed build's files went
        assert (out / "old.txt").read_text() == "old"  # the set-aside folder came back
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
