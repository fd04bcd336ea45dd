"""The layout's contracts: every writer locks, directory kinds are told apart, the index
package never calls up into the pipeline, one ONNX runner, options read back by `add`."""
import ast
import csv
import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _writers(module) -> set[str]:
    """Functions of `module` wrapped by fileio.writer (they say which argument they lock)."""
    return {name for name, fn in vars(module).items()
            if inspect.isfunction(fn) and hasattr(fn, "locks") and fn.__module__ == module.__name__}


def test_every_public_writer_locks_its_directory_when_called_by_keyword(tmp_path):
    from fixtures.locks import lock_held_elsewhere

    from mimicsearch import corpus, pipeline
    from mimicsearch.fileio import DirectoryBusy
    from mimicsearch.index import build, edit

    busy = tmp_path / "busy"
    calls = {
        (corpus, "encode_corpus"): {"input": tmp_path / "n.csv", "model_dir": tmp_path,
                                        "out_dir": busy},
        (pipeline, "build_index_from"): {"notes": tmp_path / "n.csv", "out_dir": busy},
        (pipeline, "add_notes"): {"index_dir": busy, "notes": tmp_path / "n.csv"},
        (pipeline, "sync_notes"): {"index_dir": busy, "notes": tmp_path / "n.csv"},
        (build, "build_index"): {"source": None, "out_dir": busy, "model_fingerprint": "f"},
        (edit, "apply_changes"): {"index_dir": busy, "remove_ids": [1]},
        (edit, "merge_shards"): {"index_dir": busy},
    }
    modules = [corpus, pipeline, build, edit]
    try:
        spark = importlib.import_module("mimicsearch.spark")
    except ImportError:
        spark = None
    if spark is not None:
        modules.append(spark)
        calls[(spark, "encode_corpus_spark")] = {"input_path": tmp_path / "n.csv",
                                                     "model_dir": tmp_path, "out_dir": busy}
        calls[(spark, "build_index_spark")] = {"embeddings_dir": tmp_path, "out_dir": busy}
    found = {(m, name) for m in modules for name in _writers(m)}
    assert found == set(calls)  # a new writer must be added here

    with lock_held_elsewhere(busy):
        for (module, name), kwargs in calls.items():
            with pytest.raises(DirectoryBusy, match="being written by another process"):
                getattr(module, name)(**kwargs)

def test_a_model_directory_is_not_an_embeddings_directory(tmp_path, minilm_onnx):
    from mimicsearch.embeddings import EmbeddingsManifest, is_embeddings_dir
    from mimicsearch.pipeline import build_index_from

    assert not is_embeddings_dir(minilm_onnx)
    with pytest.raises(ValueError, match="kind is 'mimicsearch-model'.*mimicsearch encode"):
        EmbeddingsManifest.load(minilm_onnx)
    with pytest.raises(ValueError, match="kind is 'mimicsearch-model'"):
        build_index_from(minilm_onnx, out_dir=tmp_path / "ix", progress=False)
    assert not (tmp_path / "ix" / "manifest.json").exists()


def _imports(path: Path) -> set[str]:
    """Modules imported by `path`, relative ones resolved within the mimicsearch package."""
    package = "mimicsearch." + ".".join(path.relative_to(ROOT / "mimicsearch").parent.parts)
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rstrip(".").split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def test_the_index_package_never_imports_the_encoding_pipeline():
    pipeline = {"mimicsearch.corpus", "mimicsearch.readers", "mimicsearch.spark",
                "mimicsearch.pipeline", "mimicsearch.encoder", "mimicsearch.options"}
    files = sorted((ROOT / "mimicsearch" / "index").glob("*.py"))
    assert len(files) >= 9
    for f in files:
        assert not _imports(f) & pipeline, f.name


def test_the_train_stage_has_no_import_cycle():
    """Every import counts, a function's own included: two modules that need each other
    are one module, or share a leaf (as `compare` and `evaluate` share `protocol`)."""
    modules = {f.stem: f for f in (ROOT / "train").glob("*.py")}
    graph = {name: {n.module.split(".")[0] for n in ast.walk(ast.parse(f.read_text(
                encoding="utf-8"))) if isinstance(n, ast.ImportFrom) and n.level == 1
                and n.module and n.module.split(".")[0] in modules}
             for name, f in modules.items()}
    assert {"compare", "evaluate", "protocol"} <= graph.keys()

    def cycle(node, path):
        if node in path:
            return path[path.index(node):] + [node]
        return next((c for nxt in sorted(graph[node]) if (c := cycle(nxt, path + [node]))),
                    None)
    assert [c for name in sorted(graph) if (c := cycle(name, []))] == []


def test_spark_calls_no_private_function_of_another_module():
    tree = ast.parse((ROOT / "mimicsearch" / "spark.py").read_text(encoding="utf-8"))
    private = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
               and n.attr.startswith("_") and not n.attr.startswith("__")
               and isinstance(n.value, ast.Name) and n.value.id not in ("self", "cls")]
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names if a.name.startswith("_")]
    assert private == [] and imported == []


def test_one_place_builds_an_onnx_session():
    sources = [p for d in ("mimicsearch", "export", "train", "bench")
               for p in (ROOT / d).rglob("*.py")]
    builders = sorted(p.relative_to(ROOT).as_posix() for p in sources
                      if "InferenceSession(" in p.read_text(encoding="utf-8"))
    assert builders == ["mimicsearch/session.py"]


def test_add_encodes_new_notes_with_the_options_the_index_recorded(tmp_path, synth_dir,
                                                                     minilm_onnx):
    from mimicsearch.encoder import Encoder
    from mimicsearch.index import BuildOptions, IndexManifest, open_index
    from mimicsearch.options import EncodeOptions
    from mimicsearch.pipeline import add_notes, build_index_from

    rows = list(csv.reader((synth_dir / "NOTEEVENTS.csv").open(encoding="utf-8", newline="")))
    first, extra = tmp_path / "first.csv", tmp_path / "extra.csv"
    with open(first, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([rows[0], *rows[1:61]])
    with open(extra, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([rows[0], *rows[61:66]])
    options = EncodeOptions(long="chunk", max_length=32, precision="fp32")
    build = BuildOptions(index_key="Flat", seed=5, eval_queries=20)
    s = build_index_from(first, out_dir=tmp_path / "ix", model_dir=minilm_onnx,
                         encode=options, build=build, progress=False)
    assert (s.read, s.encoded, s.rejected, s.added) == (60, 60, 0, 60)
    m = IndexManifest.load(tmp_path / "ix")
    assert m.build.options == build.to_dict()
    assert EncodeOptions.from_dict(m.encode) == options.replace(dim=384)
    assert IndexManifest.load(tmp_path / "ix").encode == m.encode

    s = add_notes(extra, index_dir=tmp_path / "ix")
    assert (s.read, s.encoded, s.added, s.live_notes) == (5, 5, 5, 65)
    index = open_index(tmp_path / "ix")
    added = index.reconstruct(np.arange(60, 65))
    text_col = rows[0].index("TEXT")
    texts = [r[text_col] for r in rows[61:66]]
    enc = Encoder(minilm_onnx, precision="fp32", max_length=32)
    np.testing.assert_allclose(added, enc.encode(texts, long="chunk"), atol=1e-5)
    truncated = enc.encode(texts, long="truncate")
    assert np.abs(added - truncated).max() > 1e-3  # the recorded mode made a difference
