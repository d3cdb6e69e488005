"""DIR/report.html of a loop folder built from the real stages' records (oracle-scored synthetic candidates,
the pairs stage, an evaluation table, a training run's records): it parses, every image it references exists,
and its numbers are the records' numbers."""

import json
from html.parser import HTMLParser

import pytest

from tests.stages.stage_helpers import build_pairs, write_rows
from videogpa.engine.core.config import ScoreConfig
from videogpa.engine.core.config_loading import config_from_dict, save_config
from videogpa.engine.core.report import write_report
from videogpa.engine.io.records import read_jsonl, write_json_atomic
from videogpa.engine.scenes.video_set import write_synthetic_set
from videogpa.engine.stages.evaluate import compare_scores, plot_comparison
from videogpa.engine.stages.score import Scorer
from videogpa.engine.train.run_logs import plot_heldout_curve, plot_training_curves, write_run_records


class Page(HTMLParser):
    """Every tag, image source and text piece of an HTML file (the parser raises nothing: check structure)."""

    def __init__(self):
        super().__init__()
        self.images, self.text, self.open = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in ("meta", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(path):
    page = Page()
    page.feed(path.read_text())
    page.close()
    assert not page.open, f"unclosed tags {page.open}"
    return page, " ".join(page.text)


def check_report(folder):
    """Parse folder/report.html; every image it references exists. Returns (images, text)."""
    page, text = parse(folder / "report.html")
    for src in page.images:
        assert not src.startswith(("http:", "https:", "/")) and (folder / src).is_file(), src
    return page.images, text


@pytest.fixture
def loop_folder(tmp_path):
    loop = tmp_path / "loop"
    manifest = write_synthetic_set(
        loop / "generated", 2, n_frames=5, size=32, kinds=("jitter",), progress=False
    )
    rows = [
        {**r, "prompt_id": f"scene{r['group']}", "prompt": "a room", "seed": int(r["corruption"] is not None)}
        for r in read_jsonl(manifest)
    ]
    write_rows(manifest, rows)
    cfg = ScoreConfig(geometry="oracle", num_frames=5, device="cpu", figures=2)
    Scorer.build(cfg).score(manifest, loop / "generated" / "scores.jsonl", progress=False)
    build_pairs(loop / "generated" / "scores.jsonl", loop / "pairs", manifest, min_gap=0.0, min_motion=0.0)
    scores = read_jsonl(loop / "generated" / "scores.jsonl")
    base = [{**r, "seed": 0} for r in scores if "clean" in r["video"]]
    tuned = [{**r, "seed": 0} for r in scores if "jitter" in r["video"]]
    result = compare_scores(base, tuned)
    write_json_atomic(loop / "evaluation.json", result)
    plot_comparison(result, loop / "evaluation.png")
    run = loop / "train"
    train_cfg = config_from_dict({"output_dir": str(run), "data": {"synthetic": {}}})
    write_run_records(run, train_cfg, 1, tmp_path)
    save_config(train_cfg, run / "config.yaml")
    metrics = [{"step": s, "loss": 0.7 - 0.01 * s, "accuracy": 0.5 + 0.01 * s} for s in range(1, 11)]
    write_rows(run / "metrics.jsonl", metrics)
    plot_training_curves(metrics, run / "training_curves.png")
    history = [{"step": 0, "accuracy": 0.5}, {"step": 5, "accuracy": 0.625}, {"step": 10, "accuracy": 0.75}]
    write_json_atomic(run / "heldout_history.json", history)
    write_json_atomic(
        run / "eval.json",
        {
            "heldout_accuracy_before": 0.5,
            "heldout_accuracy_after": 0.75,
            "pairs": 8,
            "steps": 10,
            "heldout_history": history,
        },
    )
    plot_heldout_curve(history, 8, run / "heldout_accuracy.png")
    return loop, result


def test_loop_report_parses_references_existing_files_and_holds_the_numbers(loop_folder):
    loop, result = loop_folder
    assert write_report(loop) == loop / "report.html"
    images, text = check_report(loop)
    for name in (
        "pairs/pairs_scores.png",
        "pairs/pairs_gaps.png",
        "pairs/pairs_examples.png",
        "evaluation.png",
        "train/training_curves.png",
        "train/heldout_accuracy.png",
        "generated/figures/scene0000_clean.png",
    ):
        assert name in images, name
    assert "candidates 4" in text and "scored 4" in text and "kept 2" in text
    assert "dropped: static 0" in text and "dropped: small_gap 0" in text
    assert f"LoRA wins {100 * result['prompt_win_rate']:.1f}% of 2 prompts" in text
    assert "50.0% before -> 75.0% after 10 steps" in text and "62.5%" in text  # the history table
    assert "global_batch_size" in text and "python" in text  # the resolved config and the versions


def test_report_of_a_training_folder_alone_and_bad_folders(loop_folder, tmp_path):
    loop, _ = loop_folder
    write_report(loop / "train")
    images, text = check_report(loop / "train")
    assert images == ["training_curves.png", "heldout_accuracy.png"] and "Counts per stage" not in text
    with pytest.raises(ValueError, match="neither a training run"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        write_report(tmp_path / "missing")


def test_report_recipe(loop_folder, capsys):
    from tests.stages.stage_helpers import load_recipe

    loop, _ = loop_folder
    assert load_recipe("report").main(["--run", str(loop)]) == 0
    assert capsys.readouterr().out.strip() == str(loop / "report.html")
    assert load_recipe("report").main(["--run", str(loop / "nothing")]) == 2
    assert json.loads((loop / "evaluation.json").read_text())["prompts"] == 2
