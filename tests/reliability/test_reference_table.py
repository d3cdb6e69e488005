"""The precomputed reference table is checked like a checkpoint: a resumed run loads only the file whose
SHA-256 its checkpoint recorded, every table is checked for shape, finiteness and the pairs it was computed
for, and every error names the table (audit N76-N79)."""

import hashlib

import pytest
import torch

from videogpa.engine.train import reference as R

META = {"seed": "0", "pairs": "3", "draws": "2", "model": "tiny", "pair_ids_sha256": "a" * 64}


def name_pair(i: int) -> str:
    return f"preference shard 'train/shard-00000.safetensors', pair {i} (pair_id 'p{i}')"


def fresh(path, table):
    return R.precomputed_reference(path, META, lambda: table.clone(), False, None, name_pair)


def resumed(path, recorded, meta=META):
    never = lambda: pytest.fail("a resumed run recomputed its table")
    return R.precomputed_reference(path, meta, never, True, recorded, name_pair)


@pytest.fixture
def table_file(tmp_path):
    path = tmp_path / R.table_name(train=True)
    ref = fresh(path, torch.rand(3, 2, 2) + 0.1)
    assert ref.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    return path, ref


def test_a_resumed_run_loads_the_recorded_table(table_file):
    path, ref = table_file
    assert torch.equal(resumed(path, ref.sha256).table, ref.table)


def test_a_scaled_table_is_refused(table_file):
    path, ref = table_file
    R.save_table(ref.table * 100, path, META)  # same metadata, other numbers
    with pytest.raises(ValueError, match=f"table {path} differs from the SHA-256 the checkpoint recorded"):
        resumed(path, ref.sha256)


def test_a_truncated_table_is_named(table_file):
    path, ref = table_file
    path.write_bytes(path.read_bytes()[:-9])
    with pytest.raises(ValueError, match=f"table {path}: not a readable table"):
        resumed(path, ref.sha256)


def test_a_non_finite_table_is_named_with_its_pair(table_file, tmp_path):
    path, ref = table_file
    bad = ref.table.clone()
    bad[1, 0, 1] = float("nan")
    R.save_table(bad, path, META)
    # a checkpoint from before the SHA-256 was recorded: the checks still find it
    named = rf"table {path}: non-finite reference errors for 1 of 3 pair\(s\), first preference shard .*'p1'"
    with pytest.raises(ValueError, match=named):
        resumed(path, None)
    with pytest.raises(
        ValueError, match="non-finite reference errors for 3 of 3 pair.*are the reference model's"
    ):
        fresh(tmp_path / "again.safetensors", torch.full((3, 2, 2), float("nan")))
    assert not (tmp_path / "again.safetensors").exists()


def test_a_table_for_other_pairs_or_shape_is_named(table_file):
    path, ref = table_file
    with pytest.raises(ValueError, match=f"table {path} was computed for another pair_ids_sha256 than"):
        resumed(path, ref.sha256, {**META, "pair_ids_sha256": "b" * 64})
    R.save_table(torch.rand(3, 1, 2), path, META)  # metadata that lies about the shape
    with pytest.raises(ValueError, match=rf"table {path}: \[3, 1, 2\] torch.float32, expected \[3, 2, 2\]"):
        resumed(path, None)
    path.unlink()
    with pytest.raises(ValueError, match=f"needs {path}, which is missing"):
        resumed(path, ref.sha256)
