"""Starting uvicorn: our access-log line instead of its own (which prints query strings),
one startup line saying what is served where and whether a key guards it."""
from __future__ import annotations

import logging
import logging.config
import sys
from pathlib import Path

from .settings import ServeSettings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_config(level: str) -> dict:
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
               "formatter": "plain"}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"plain": {"format": LOG_FORMAT}},
            "handlers": {"stderr": handler},
            "loggers": {name: {"handlers": ["stderr"], "level": level.upper(),
                               "propagate": False}
                        for name in ("mimicsearch", "uvicorn", "uvicorn.error")}
            | {"uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False}}}


def run(index_dir: str | Path, settings: ServeSettings) -> None:
    import uvicorn

    from .app import create_app

    logging.config.dictConfig(log_config(settings.log_level))
    app = create_app(index_dir, settings)
    server = app.state.server
    notes = len(server.searcher.ids())
    scheme_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"serving {index_dir} ({notes} notes) on http://{scheme_host}:{settings.port} "
          f"(API key {'required' if settings.auth else 'off'}; page at /, API at /docs)",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False,
                log_config=log_config(settings.log_level), server_header=False,
                timeout_graceful_shutdown=5)


