"""FAISS indexes over note embeddings, one job a module.

choice       which index a corpus gets (memory budget, size)
faiss_ops    faiss helpers: create, read, write, clone, search knobs
sources      where a build reads vectors: arrays or an embeddings directory
build        plan -> train quantizer -> add pieces -> finish (both engines)
tune         recall@10 against exact neighbours; the cheapest search setting
loaded       an opened index directory and its filtered search
edit         add, remove, merge on disk, describe
commit       the commit protocol; sweeping what a killed writer left
lexical/     BM25 as segments beside the shards (write, read, merge, compact)
store        the metadata store beside the shards (faiss id = store row)
manifest     the index directory contract

Vectors are L2-normalised and compared by inner product (cosine). This package never
imports the encoding pipeline: `mimicsearch.pipeline` joins notes -> embeddings -> index.
"""
from .build import BuildOptions, BuildPlan, Piece, build_index, claim_out_dir
from .choice import IndexChoice, choose_index, default_memory_budget, parse_bytes
from .edit import (
    UNFINISHED,
    ChangeResult,
    add_to_index,
    apply_changes,
    index_info,
    merge_shards,
    remove_from_index,
    sweep_orphans,
)
from .lexical.merge import compact_index
from .loaded import NoteIndex, open_index
from .manifest import Family, IndexManifest, check_model
from .sources import ArraySource, EmbeddingsSource, VectorSource, check_vectors
from .store import MetadataStore
from .tune import measure_quality

__all__ = [
    "UNFINISHED",
    "ArraySource",
    "BuildOptions",
    "BuildPlan",
    "ChangeResult",
    "EmbeddingsSource",
    "Family",
    "IndexChoice",
    "IndexManifest",
    "MetadataStore",
    "NoteIndex",
    "Piece",
    "VectorSource",
    "add_to_index",
    "apply_changes",
    "build_index",
    "check_model",
    "check_vectors",
    "choose_index",
    "claim_out_dir",
    "compact_index",
    "default_memory_budget",
    "index_info",
    "measure_quality",
    "merge_shards",
    "open_index",
    "parse_bytes",
    "remove_from_index",
    "sweep_orphans",
]
