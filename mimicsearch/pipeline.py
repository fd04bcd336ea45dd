"""Notes to a searchable index: encode (either engine), then build or extend the index.

The one module that joins the encoding pipeline (corpus, spark) to the index package; the
index package itself never encodes. `build-index` and `add` are these functions.
"""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from .corpus import BATCH_SIZE, SHARD_SIZE, encode_corpus
from .embeddings import EmbeddingsManifest
from .fileio import writer
from .index import (
    BuildOptions,
    EmbeddingsSource,
    IndexManifest,
    add_to_index,
    build_index,
    check_model,
    claim_out_dir,
)
from .model_manifest import ModelManifest
from .options import EncodeOptions

ENGINES = ("local", "spark")


def _spark():
    from . import spark  # the [spark] extra

    return spark


def _check_engine(engine: str, partitions, master, spark) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; valid: {list(ENGINES)}")
    if engine == "local" and (master or partitions or spark):
        raise ValueError("--master and partitions need --engine spark")


def encode_notes(input_path: str | Path, model_dir: str | Path, out_dir: str | Path,
                 options: EncodeOptions | None = None, *, engine: str = "local",
                 threads: int | None = None, overwrite: bool = False, progress: bool = True,
                 shard_size: int = SHARD_SIZE, batch_size: int = BATCH_SIZE,
                 show_text: bool = False, npy: bool = False, partitions: int | None = None,
                 master: str | None = None, spark=None):
    """`encode`: a notes file to an embeddings directory on `engine`. Only the local engine
    resumes and takes shard_size, batch_size, show_text and npy; only Spark takes
    partitions and master."""
    _check_engine(engine, partitions, master, spark)
    options = options or EncodeOptions()
    if engine == "spark":
        local_only = [name for name, given in (("--npy", npy), ("--show-text", show_text),
                                               ("--shard-size", shard_size != SHARD_SIZE),
                                               ("--batch-size", batch_size != BATCH_SIZE))
                      if given]
        if local_only:
            raise ValueError(f"{', '.join(local_only)} need --engine local")
        return _spark().encode_corpus_spark(input_path, model_dir, out_dir, options,
                                            threads=threads, partitions=partitions,
                                            overwrite=overwrite, progress=progress,
                                            master=master, spark=spark)
    return encode_corpus(input_path, model_dir, out_dir, options, threads=threads,
                         shard_size=shard_size, batch_size=batch_size, show_text=show_text,
                         npy=npy, overwrite=overwrite, progress=progress)


def embeddings_for(input_path: str | Path, model_dir: str | Path | None, embeddings_dir: Path,
                   options: EncodeOptions, *, engine: str = "local", threads: int | None = None,
                   progress: bool = True, **spark_args) -> Path:
    """The embeddings directory for `input_path`: itself if it is one (checked against
    `model_dir` when given), else the notes encoded into `embeddings_dir` by `engine`."""
    input_path = Path(input_path)
    if input_path.is_dir():
        m = EmbeddingsManifest.load(input_path)  # not one: the reason, naming the file
        if model_dir is not None:
            check_model_dir(m.model_fingerprint, model_dir, input_path)
        return input_path
    if model_dir is None:
        raise ValueError(f"{input_path} holds notes: pass --model to encode them")
    encode_notes(input_path, model_dir, embeddings_dir, options, engine=engine,
                 threads=threads, progress=progress, **spark_args)
    return embeddings_dir


def check_model_dir(fingerprint: str, model_dir: str | Path, encoded: Path) -> None:
    got = ModelManifest.load(model_dir).fingerprint
    if got != fingerprint:
        raise ValueError(f"{encoded} was encoded by model {fingerprint}, not by "
                         f"{model_dir} ({got})")


@writer("out_dir")
def build_index_from(input_path: str | Path, out_dir: str | Path,
                     model_dir: str | Path | None = None, *,
                     encode: EncodeOptions | None = None, build: BuildOptions | None = None,
                     engine: str = "local", threads: int | None = None, progress: bool = True,
                     partitions: int | None = None, master: str | None = None,
                     spark=None) -> IndexManifest:
    """`build-index`: encode notes into OUT/embeddings (or take an embeddings directory),
    then build the index over them, both steps on `engine` ("local" or "spark"). Notes get
    snippets for the store unless `encode` says otherwise."""
    _check_engine(engine, partitions, master, spark)
    out = Path(out_dir)
    claim_out_dir(out)  # before encoding: a finished index is refused at once
    spark_args = {"partitions": partitions, "master": master, "spark": spark}
    emb = embeddings_for(input_path, model_dir, out / "embeddings",
                         encode or EncodeOptions(snippets=True),
                         engine=engine, threads=threads, progress=progress,
                         **(spark_args if engine == "spark" else {}))
    recorded_model = str(Path(model_dir).resolve()) if model_dir else ""
    if engine == "spark":
        return _spark().build_index_spark(emb, out, model_dir=recorded_model, options=build,
                                          progress=progress, **spark_args)
    source = EmbeddingsSource(emb).verify()
    return build_index(source, out, model_fingerprint=source.manifest.model_fingerprint,
                       model_dir=recorded_model, options=build,
                       encode=source.manifest.encode_options(), progress=progress)


@writer("index_dir")
def add_notes(index_dir: str | Path, input_path: str | Path,
              model_dir: str | Path | None = None, *, text_col: str | None = None,
              id_col: str | None = None, threads: int | None = None,
              progress: bool = True) -> IndexManifest:
    """`add`: encode new notes as the index's own notes were encoded (the options its
    manifest records; `text_col`/`id_col` name the new file's columns) and append them; an
    embeddings directory is appended as it is, if its model matches."""
    index_dir = Path(index_dir)
    m = IndexManifest.load(index_dir)
    model_dir = model_dir or m.model_dir or None
    for stale in index_dir.glob(".adding-*"):  # from a killed add; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = index_dir / f".adding-{uuid.uuid4().hex[:12]}"
    try:
        options = EncodeOptions.from_dict(m.encode) if m.encode else EncodeOptions(
            dim=m.dimension)
        options = options.replace(text_col=text_col, id_col=id_col, keep=None,
                                  input_format=None)
        is_dir = Path(input_path).is_dir()
        emb = embeddings_for(input_path, None if is_dir else model_dir, tmp, options,
                             threads=threads, progress=progress)
        source = EmbeddingsSource(emb).verify()
        check_model(m, source.manifest.model_fingerprint, input_path if is_dir else model_dir)
        vecs, tables = [], []
        for v, t in source.read(0, source.rows):
            vecs.append(v)
            tables.append(t)
        if not vecs:
            raise ValueError(f"{input_path} holds no notes to add")
        return add_to_index(index_dir, np.concatenate(vecs), pa.concat_tables(tables))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
