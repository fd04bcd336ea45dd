"""IdSet: the duplicate-id map that does not grow with the corpus in Python objects."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mimicsearch.idset import IdSet

INT64 = st.integers(-(2**63), 2**63 - 1)


def first_lines(ids):
    """What a dict gives: each id's first line, and the lines that repeat an earlier id."""
    first, dups = {}, []
    for line, i in enumerate(ids):
        if i in first:
            dups.append((line, first[i]))
        else:
            first[i] = line
    return first, dups


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(INT64, st.integers(0, 50)), max_size=300) | st.lists(
    st.text(max_size=6), max_size=300))
def test_idset_finds_every_duplicate_like_a_dict(ids):
    seen = IdSet(buffer=7, spill_rows=20)  # tiny: flushes, merges and spills all happen
    dups = []
    for line, i in enumerate(ids):
        first = seen.get(i)
        if first is not None:
            dups.append((line, first))
        else:
            seen[i] = line
    expected_first, expected_dups = first_lines(ids)
    assert dups == expected_dups
    assert len(seen) == len(expected_first)
    assert all(seen.get(i) == line for i, line in expected_first.items())
    seen.close()


def test_idset_memory_is_bounded_and_spilled_runs_are_files(tmp_path):
    seen = IdSet(buffer=1000, spill_rows=20_000, spill_dir=tmp_path)
    n = 200_000
    ids = np.random.default_rng(0).permutation(n * 3)[:n]
    seen.update(ids.tolist(), range(n))
    assert len(seen) == n
    assert seen._tmp.parent == tmp_path and seen._tmp.name.startswith(".ids-")
    assert len(list(seen._tmp.glob("*.npy"))) >= 2 * (n // 40_000)
    assert seen.nbytes() <= 3 * 20_000 * 16  # in RAM: only the runs not yet spilled
    assert seen.get(int(ids[12345])) == 12345 and seen.get(n * 3 + 1) is None
    tmp = seen._tmp
    seen.close()
    assert not tmp.exists()


def test_idset_refuses_mixed_id_kinds():
    seen = IdSet()
    seen[5] = 1
    with pytest.raises(TypeError, match="all integers or all strings"):
        seen["5"] = 2
