"""`mimicsearch serve`: one process holding the model and an index, behind an HTTP API
(search, notes, timelines, OpenAI-compatible embeddings, metrics) and a search page.

The `[serve]` extra (FastAPI, uvicorn, prometheus-client, swagger-ui-bundle); torch-free.
"""
from .app import create_app
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "serve"]


def serve(index_dir, settings: ServeSettings | None = None, **kwargs) -> None:
    """Run the server in the foreground until interrupted."""
    from .run import run

    run(index_dir, settings or ServeSettings(**kwargs))
