"""loop.launcher: the loop runs its stages as recipes under the launcher (here generate and score, torchrun
with 2 ranks): each rank writes its own record files, and the union holds every candidate exactly once."""

import json
from pathlib import Path

from tests.stages.stage_helpers import REPO, TORCHRUN
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.io.sharded import read_sharded
from videogpa.engine.loop.loop import Loop
from videogpa.engine.loop.loop_config import load_loop_config


def test_the_loop_launches_its_stages_sharded(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "prompts.txt").write_text("a red barn\na stone bridge\n")
    overrides = [
        f"loop.launcher={json.dumps(list(TORCHRUN))}",
        f"loop.generation.prompts={tmp_path / 'prompts.txt'}",
        "loop.generation.num_candidates=2",
        "loop.generation.batch_size=2",
        "loop.generation.steps=2",
    ]
    out = tmp_path / "loop"
    loop = Loop(load_loop_config(REPO / "recipes" / "configs" / "tiny.yaml", overrides), out)
    with loop.lock():
        loop.prepare_models()
        manifest = loop.generate()
        scores = loop.score(manifest)
    log = capsys.readouterr().out
    assert (
        f"[generate] {' '.join(TORCHRUN)} -m videogpa.recipes.generate "
        f"--config {out / 'stage_config.yaml'}" in log
    )
    generated = out / "generated"
    per_rank = [read_jsonl(generated / f"manifest.shard-{i}-of-2.jsonl") for i in (0, 1)]
    assert [len(rows) for rows in per_rank] == [2, 2] and not (generated / "manifest.jsonl").exists()
    stems = sorted(Path(r["video"]).stem for rows in per_rank for r in rows)
    assert stems == ["p00000_s0", "p00000_s1", "p00001_s0", "p00001_s1"]
    assert {p.name for p in generated.glob("scores*")} == {
        "scores.shard-0-of-2.jsonl",
        "scores.shard-1-of-2.jsonl",
    }
    rows = read_sharded(scores)
    assert sorted(Path(r["video"]).stem for r in rows) == stems and all(r["status"] == "ok" for r in rows)
