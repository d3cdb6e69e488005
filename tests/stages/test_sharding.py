"""The sharding mechanism in one process: parsing and composing shards, the share each takes, the per-shard
record files and their union, and the per-shard folder locks."""

import os

import pytest

from tests.stages.stage_helpers import load_recipe, write_rows
from videogpa.engine.core.config import GenerationConfig, ScoreConfig
from videogpa.engine.io.lock import folder_lock
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.io.sharded import read_sharded, shard_files, shard_path
from videogpa.engine.scenes.video_set import write_synthetic_set
from videogpa.engine.stages import generate, score
from videogpa.engine.stages.sharding import (
    Shard,
    current_shard,
    finishes,
    launcher_shard,
    shard_device,
    sole,
)


@pytest.fixture
def no_launcher(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "text, message",
    [
        ("2/2", r"--shard 2/2: shard index must be in \[0, 2\), got 2"),
        ("-1/2", r"--shard -1/2: shard index must be in \[0, 2\), got -1"),
        ("0/0", r"--shard 0/0: shard count must be ≥ 1, got 0"),
        ("1", r"--shard 1: expected I/N, e.g. 0/4"),
        ("a/b", r"--shard a/b: expected I/N"),
    ],
)
def test_a_bad_shard_is_a_one_line_error_naming_it(text, message):
    with pytest.raises(ValueError, match=message):
        Shard.parse(text)


def test_the_shares_of_n_shards_partition_the_items():
    items = list(range(11))
    for n in (1, 2, 3, 11, 12):
        shares = [Shard(i, n).select(items) for i in range(n)]
        assert sorted(x for share in shares for x in share) == items
    assert Shard(1, 3).select(items) == [1, 4, 7, 10]


def test_one_process_is_the_whole_and_a_launcher_composes_with_the_flag(no_launcher):
    assert current_shard(None) == Shard(0, 1) and not current_shard(None).sharded
    assert current_shard("1/3") == Shard(1, 3)
    no_launcher.setenv("RANK", "1")
    no_launcher.setenv("WORLD_SIZE", "2")
    assert launcher_shard() == Shard(1, 2) == current_shard(None)
    assert current_shard("2/3") == Shard(2 * 2 + 1, 6)  # node 2 of 3, its rank 1 of 2
    assert current_shard(Shard()) == Shard()  # a resolved shard (the loop's, evaluate's WHOLE) is final
    no_launcher.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="environment variable WORLD_SIZE: expected an integer, got 'two'"):
        current_shard(None)


def test_the_device_is_the_local_rank_only_for_plain_cuda(no_launcher):
    assert shard_device(None, "cpu") == "cpu" and shard_device("cuda:3", "cpu") == "cuda:3"
    no_launcher.setenv("LOCAL_RANK", "1")
    assert shard_device(None, "cpu") == "cpu" and shard_device("cpu", "cuda") == "cpu"


def test_shard_files_are_named_by_shard_and_read_as_one_union(tmp_path):
    logical = tmp_path / "scores.jsonl"
    assert shard_path(logical, 0, 1) == logical
    assert shard_path(logical, 1, 2) == tmp_path / "scores.shard-1-of-2.jsonl"
    assert read_sharded(logical) == [] and shard_files(logical) == []
    write_rows(shard_path(logical, 1, 2), [{"video": "c"}])
    write_rows(shard_path(logical, 0, 3), [{"video": "d"}])
    write_rows(shard_path(logical, 0, 2), [{"video": "b"}])
    write_rows(logical, [{"video": "a"}])
    for stray in ("scores.jsonl.bak", "scores.shard-x-of-2.jsonl", "other.shard-0-of-2.jsonl"):
        write_rows(tmp_path / stray, [{"video": "stray"}])
    assert [p.name for p in shard_files(logical)] == [
        "scores.jsonl",
        "scores.shard-0-of-2.jsonl",
        "scores.shard-1-of-2.jsonl",
        "scores.shard-0-of-3.jsonl",
    ]
    assert [r["video"] for r in read_sharded(logical)] == ["a", "b", "c", "d"]


def test_a_videos_ok_row_in_any_file_outranks_its_error_rows(tmp_path):
    logical = tmp_path / "scores.jsonl"
    write_rows(logical, [{"video": "v", "status": "error"}, {"video": "w", "status": "ok", "score": 1.0}])
    write_rows(shard_path(logical, 0, 2), [{"video": "v", "status": "ok", "score": 2.0}])
    write_rows(
        shard_path(logical, 1, 2), [{"video": "w", "status": "error"}, {"video": "x", "status": "error"}]
    )
    rows = {r["video"]: r for r in score.latest_rows(logical)}
    assert rows["v"]["score"] == 2.0 and rows["w"]["score"] == 1.0 and rows["x"]["status"] == "error"
    summary = score.summarize_scores(logical)
    assert (summary.ok, summary.errors) == (2, 1)


def test_a_manifests_shards_are_one_sorted_job_list(tmp_path):
    logical = tmp_path / "manifest.jsonl"
    write_rows(shard_path(logical, 1, 2), [{"video": "videos/b.mp4", "seed": 1}])
    write_rows(shard_path(logical, 0, 2), [{"video": "videos/c.mp4", "seed": 2}, {"video": "videos/a.mp4"}])
    assert [j.video.name for j in score.list_videos(logical)] == ["a.mp4", "b.mp4", "c.mp4"]
    assert score.unscored(logical, tmp_path / "scores.jsonl") == [
        str(j.video) for j in score.list_videos(logical)
    ]
    with pytest.raises(ValueError, match="neither a folder nor a JSONL manifest"):
        score.list_videos(tmp_path / "missing.jsonl")


def test_shards_of_one_run_share_a_folder_and_nothing_else_does(tmp_path):
    def lock(shard: Shard, stage: str = "generate"):
        return folder_lock(tmp_path, shard.lock_name(stage), shares_with=shard.lock_shares_with(stage))

    with lock(Shard(0, 2)):
        with lock(Shard(1, 2)) as other:  # the other shard of the run: allowed
            assert other.name == ".lock.generate.shard-1-of-2"
        # the same shard, one process, another sharding, another stage
        for refused, stage in (
            (Shard(0, 2), "generate"),
            (Shard(), "generate"),
            (Shard(1, 3), "generate"),
            (Shard(1, 2), "score"),
        ):
            with pytest.raises(ValueError, match=rf"in use by another process \(pid {os.getpid()}; lock .*"):
                with lock(refused, stage):
                    pass
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock.generate.shard-0-of-2"]
    with lock(Shard()):
        with pytest.raises(ValueError, match=r"lock .*/\.lock\)"):
            with lock(Shard(1, 2)):
                pass
    assert list(tmp_path.iterdir()) == []


def test_a_stage_takes_its_shards_lock(tmp_path, no_launcher):
    with folder_lock(tmp_path, ".lock.generate.shard-0-of-2"):
        with pytest.raises(ValueError, match=r"in use by another process .*\.lock\.generate\.shard-0-of-2"):
            generate.run(GenerationConfig(), None, tmp_path, shard="0/2")
        with pytest.raises(ValueError, match="no pipeline folder given"):  # shard 1/2 got past the lock
            generate.run(GenerationConfig(), None, tmp_path, shard="1/2")


@pytest.mark.parametrize("name", ["generate", "score"])
def test_a_recipes_bad_shard_is_exit_2_and_writes_nothing(name, tmp_path, capsys, no_launcher):
    out = tmp_path / "out"
    argv = ["--shard", "2/2"]
    argv += (
        ["--out-dir", str(out), "--pipeline", str(tmp_path)] if name == "generate" else ["--videos", str(out)]
    )
    assert load_recipe(name).main(argv) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "error: --shard 2/2: shard index must be in [0, 2), got 2"
    )
    assert not out.exists()


def test_a_score_rerun_with_another_n_scores_each_video_once_and_outranks_old_errors(tmp_path, no_launcher):
    manifest = write_synthetic_set(tmp_path / "videos", 1, n_frames=6, progress=False)  # 5 videos
    out, cfg = tmp_path / "scores", ScoreConfig(num_frames=6)
    score.run(cfg, manifest, out, progress=False, shard="0/2")
    zero = read_jsonl(out / "scores.shard-0-of-2.jsonl")
    theirs = [str(j.video) for j in Shard(1, 2).select(score.list_videos(manifest))]
    assert len(zero) == 3 and not {r["video"] for r in zero} & set(theirs)
    failed = {"video": theirs[0], "status": "error", "error": "RuntimeError: killed"}  # shard 1's last words
    write_rows(out / "scores.shard-1-of-2.jsonl", [failed])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    summary = score.run(cfg, manifest, out, progress=False)  # one process finishes (and retries) the rest
    assert summary.new_rows == 2 and (summary.ok, summary.errors) == (5, 0)
    assert sorted(r["video"] for r in read_jsonl(out / "scores.jsonl")) == sorted(theirs)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "scores.jsonl"} == before
    assert score.unscored(manifest, out / "scores.jsonl") == []
    assert score.run(cfg, manifest, out, progress=False, shard="1/3").new_rows == 0


def test_the_once_only_step_is_done_by_one_process_once_the_set_is_complete(tmp_path):
    assert finishes(Shard(), lambda: False)  # one process: the whole set is its own
    assert not finishes(Shard(0, 2), lambda: False) and finishes(Shard(1, 2), lambda: True)
    with sole(tmp_path, "encode.assemble") as first:
        with sole(tmp_path, "encode.assemble") as second:  # held by a live process (this one)
            assert first and not second
    assert not list(tmp_path.iterdir())  # released


def test_one_at_a_time_waits_for_the_holder(tmp_path):
    import threading
    import time

    from videogpa.engine.stages.sharding import one_at_a_time

    entered, order = threading.Event(), []

    def first():
        with one_at_a_time(tmp_path, "models"):
            entered.set()
            time.sleep(0.5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    entered.wait(5)
    with one_at_a_time(tmp_path, "models", poll_s=0.05):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"] and not list(tmp_path.iterdir())
