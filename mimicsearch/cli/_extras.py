"""Commands of stages whose extra is not installed still appear, and fail with one line."""
from __future__ import annotations

import importlib
from types import ModuleType

import click

# Top-level packages each extra brings; an ImportError naming one of them means the extra is
# missing, any other ImportError is a real bug and is not disguised.
EXTRA_PACKAGES = {
    "train": {"torch", "transformers", "sentence_transformers", "sklearn", "pandas"},
    "export": {"torch", "transformers", "sentence_transformers", "optimum", "onnx"},
    "spark": {"pyspark", "pandas"},
    "serve": {"fastapi", "starlette", "uvicorn", "prometheus_client", "pydantic"},
}


def import_stage(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = (e.name or "").split(".")[0]
        if missing in EXTRA_PACKAGES[extra]:
            raise click.ClickException(
                f"this command needs the [{extra}] extra ({missing} is not installed): "
                f"pip install 'mimicsearch[{extra}]'"
                + ("  (install torch first: pip install torch==2.13.0 for the CPU build)"
                   if missing == "torch" else "")
            ) from None
        raise
