"""The synthetic-pair cache (engine.scenes.pair_cache): a set is made once and copied after that, a changed
set or changed code makes a new entry, an incomplete entry is remade, and the cache can be off or broken
without a run failing."""

import logging

import pytest

from tests.trainer.trainer_helpers import tiny_config
from videogpa.engine.models import get_adapter
from videogpa.engine.scenes import pair_cache, preference_pairs
from videogpa.engine.train import training_data

SMALL = {"synthetic": {"train_pairs": 3, "heldout_pairs": 2}}


@pytest.fixture
def builds(monkeypatch):
    """The splits rendered and encoded (write_split calls), in order."""
    made = []
    real = preference_pairs.write_split

    def counting(out_dir, cfg, split, *args, **kwargs):
        made.append(split)
        return real(out_dir, cfg, split, *args, **kwargs)

    monkeypatch.setattr(preference_pairs, "write_split", counting)
    return made


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _sets(tmp_path, name, **data):
    cfg = tiny_config(tmp_path / name, data={"synthetic": {**SMALL["synthetic"], **data}})
    training_data._write_synthetic(cfg, get_adapter("tiny"), tmp_path / name / "data")
    return tmp_path / name / "data"


def test_a_set_is_made_once_then_copied_alike(tmp_path, monkeypatch, builds):
    monkeypatch.setenv(pair_cache.CACHE_ENV, str(tmp_path / "cache"))
    first = _sets(tmp_path, "a")
    assert builds == ["train", "heldout"]
    second = _sets(tmp_path, "b")
    assert builds == ["train", "heldout"], "the second run rendered its set again"
    assert _files(first) == _files(second) and len(_files(first)) >= 4
    assert len(list((tmp_path / "cache" / "synthetic").iterdir())) == 1

    _sets(tmp_path, "c", strength=2.0)  # another set: another entry
    assert builds == ["train", "heldout"] * 2
    assert len(list((tmp_path / "cache" / "synthetic").iterdir())) == 2


def test_an_incomplete_entry_is_made_again(tmp_path, monkeypatch, builds):
    monkeypatch.setenv(pair_cache.CACHE_ENV, str(tmp_path / "cache"))
    first = _files(_sets(tmp_path, "a"))
    (entry,) = (tmp_path / "cache" / "synthetic").iterdir()
    (entry / "heldout" / "index.jsonl").unlink()  # as a writer killed before the rename could not leave it
    assert _files(_sets(tmp_path, "b")) == first
    assert builds == ["train", "heldout"] * 2


def test_the_cache_off_or_unwritable_makes_the_set_in_the_run_folder(tmp_path, monkeypatch, builds, caplog):
    monkeypatch.setenv(pair_cache.CACHE_ENV, "off")
    assert (_sets(tmp_path, "a") / "train" / "index.jsonl").is_file()
    assert builds == ["train", "heldout"] and not (tmp_path / "cache").exists()

    (tmp_path / "blocked").write_text("a file where the cache folder would be")
    monkeypatch.setenv(pair_cache.CACHE_ENV, str(tmp_path / "blocked"))
    with caplog.at_level(logging.WARNING):
        data = _sets(tmp_path, "b")
    assert _files(data) == _files(tmp_path / "a" / "data")
    assert "synthetic-pair cache" in caplog.text and "not usable" in caplog.text


def test_the_key_follows_the_identity_and_the_code(tmp_path, monkeypatch):
    source = tmp_path / "procedural.py"
    source.write_text("RENDER = 1\n")
    key = pair_cache.cache_key({"seed": 1}, [source])
    assert pair_cache.cache_key({"seed": 1}, [source]) == key
    assert pair_cache.cache_key({"seed": 2}, [source]) != key
    source.write_text("RENDER = 2\n")
    assert pair_cache.cache_key({"seed": 1}, [source]) != key

    monkeypatch.delenv(pair_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pair_cache.cache_root() == tmp_path / "xdg" / "videogpa"
    monkeypatch.setenv(pair_cache.CACHE_ENV, "")
    assert pair_cache.cache_root() is None
