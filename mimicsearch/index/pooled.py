"""Each patient's sum of stored vectors over its live rows, kept with the index.

Dense patient search ranks patients by the normalised mean of their rows' vectors. Pooling
those from every stored row costs a pass over the whole index (minutes of decoding at 2M
notes) on the first patient query after each commit; instead every commit that adds or
removes rows updates the sums it changes (the vectors are at hand when rows are added; a
removed row's vector is read before faiss forgets it), and writes them as one file named
in the manifest. A patient is keyed by a representative store row: the subject at that row,
typed as the store types it, is the patient, whatever the raw text of its SUBJECT_ID.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..fileio import atomic_path
from .manifest import FileRef

SUBJECT = "SUBJECT_ID"


@dataclass(frozen=True)
class PatientSums:
    rows: np.ndarray  # int64 [patients]: a store row of the patient (its key)
    sums: np.ndarray  # float64 [patients, dim]: the sum of its live rows' vectors
    counts: np.ndarray  # int64 [patients]: its live rows

    @classmethod
    def empty(cls, dim: int) -> PatientSums:
        return cls(np.zeros(0, np.int64), np.zeros((0, dim)), np.zeros(0, np.int64))

    @classmethod
    def of(cls, subjects: pa.Array, rows: np.ndarray, vectors: np.ndarray,
           sign: int = 1) -> PatientSums:
        """Sums of `vectors` (of store `rows`, whose SUBJECT_ID values are `subjects`, in
        any one typing) by subject; rows without a subject belong to no patient."""
        subjects = pa.chunked_array([subjects]) if isinstance(subjects, pa.Array) else subjects
        known = pc.is_valid(subjects).to_numpy(zero_copy_only=False)
        if not known.any():
            return cls.empty(vectors.shape[1])
        codes = pc.dictionary_encode(subjects.filter(pa.array(known)).combine_chunks())
        code = codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        n = len(codes.dictionary)
        sums = np.zeros((n, vectors.shape[1]))
        np.add.at(sums, code, np.asarray(vectors, np.float64)[known])
        first = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(first, code, np.asarray(rows, np.int64)[known])
        return cls(first, sign * sums, sign * np.bincount(code, minlength=n))

    def combine(self, other: PatientSums, subject: pa.ChunkedArray,
                first_row: int = 0) -> PatientSums:
        """Both sets of sums added per patient, `subject` the SUBJECT_ID column of the
        store rows from `first_row` on (the state that holds both sets' rows); patients
        left with no row drop."""
        rows = np.concatenate([self.rows, other.rows])
        if not len(rows):
            return self
        codes = pc.dictionary_encode(subject.take(pa.array(rows - first_row)).combine_chunks())
        code = codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        n = len(codes.dictionary)
        sums = np.zeros((n, self.sums.shape[1]))
        np.add.at(sums, code, np.concatenate([self.sums, other.sums]))
        counts = np.bincount(code, np.concatenate([self.counts, other.counts]),
                             minlength=n).astype(np.int64)
        first = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(first, code, rows)
        keep = counts > 0
        return PatientSums(first[keep], sums[keep], counts[keep])

    def write(self, index_dir: str | Path) -> FileRef:
        name = f"patients-{uuid.uuid4().hex[:12]}.parquet"
        dim = self.sums.shape[1]
        table = pa.table({"row": self.rows, "count": self.counts,
                          "sum": pa.FixedSizeListArray.from_arrays(
                              pa.array(self.sums.reshape(-1)), dim)})
        with atomic_path(Path(index_dir) / name, new=True) as tmp:
            pq.write_table(table, tmp)
        return FileRef.of(index_dir, name)

    @classmethod
    def read(cls, index_dir: str | Path, ref: FileRef, dim: int,
             verify: bool = True) -> PatientSums:
        path = ref.verify(index_dir) if verify else Path(index_dir) / ref.file
        t = pq.read_table(path)
        sums = t.column("sum").combine_chunks().flatten().to_numpy().reshape(-1, dim)
        return cls(t.column("row").to_numpy(), sums, t.column("count").to_numpy())
