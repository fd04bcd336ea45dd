"""`mimicsearch serve`: the search page and HTTP API over one index."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ._errors import EXPECTED, fail
from ._extras import import_stage


@click.command("serve")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any address but loopback needs --api-key-file "
              "(or an explicit --no-auth).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port to listen on.")
@click.option("--api-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="File holding the API key clients send as 'Authorization: Bearer KEY' "
              "(at least 16 characters; chmod 600).")
@click.option("--no-auth", is_flag=True, help="Listen beyond loopback without a key: anyone "
              "who reaches the port reads the notes.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False),
              help="Exported model (default: the one the index records).")
@click.option("--threads", type=int, help="Encoder threads (default: physical cores).")
@click.option("--max-k", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Most hits one search returns.")
@click.option("--max-body-bytes", type=click.IntRange(1024), default=1 << 20,
              show_default=True, help="Largest request body.")
@click.option("--max-text-chars", type=click.IntRange(1), default=20_000, show_default=True,
              help="Longest query or embedding input.")
@click.option("--max-inputs", type=click.IntRange(1), default=256, show_default=True,
              help="Most texts in one /v1/embeddings request.")
@click.option("--batch-wait-ms", type=click.FloatRange(0, 1000), default=5.0,
              show_default=True, help="How long a batch may wait for requests the server is "
              "already handling (a lone request never waits).")
@click.option("--batch-tokens", type=click.IntRange(16), default=256, show_default=True,
              help="A batch stops gathering at this many padded tokens (texts x the longest "
              "one's tokens; more adds padding, not speed, on a CPU).")
@click.option("--no-batching", is_flag=True, help="Encode each request on its own (slower "
              "under concurrent load; for comparison).")
@click.option("--cors-origin", multiple=True, help="Origin allowed to call the API from a "
              "browser (repeatable; default: none, CORS off).")
@click.option("--no-verify", is_flag=True, help="Skip hashing index files on (re)load.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Server log detail (info: one line "
              "per request; never note or query text).")
def serve_cmd(index_dir, host, port, api_key_file, no_auth, model_dir, threads, max_k,
              max_body_bytes, max_text_chars, max_inputs, batch_wait_ms, batch_tokens,
              no_batching, cors_origin, no_verify, log_level):
    """Serve INDEX_DIR: a search page at / and a JSON API (/search, /notes/ID,
    /notes/ID/similar, /patients/ID/timeline, OpenAI-compatible /v1/embeddings, /info,
    /health, /metrics; described at /docs). Changes that add, remove or sync make to the
    index are served without a restart.

    \b
    Examples:
      mimicsearch serve runs/demo-index
      mimicsearch serve runs/demo-index --host 0.0.0.0 --api-key-file ~/.mimicsearch-key

    The page and API show whole notes: clinical data. Logs name routes and statuses,
    never note or query text.
    """
    serving = import_stage("mimicsearch.serve", "serve")
    from mimicsearch.serve.settings import key_file_warning, read_api_key

    try:
        key = None
        if api_key_file is not None:
            key = read_api_key(api_key_file)
            if (warning := key_file_warning(api_key_file)) is not None:
                click.echo(f"warning: {warning}", err=True)
        settings = serving.ServeSettings(
            host=host, port=port, api_key=key, no_auth=no_auth, model_dir=model_dir,
            threads=threads, verify=not no_verify, max_k=max_k, max_body_bytes=max_body_bytes,
            max_text_chars=max_text_chars, max_inputs=max_inputs, batch_wait_ms=batch_wait_ms,
            batch_tokens=batch_tokens,
            batching=not no_batching, cors_origins=tuple(cors_origin), log_level=log_level)
        serving.serve(index_dir, settings)
    except EXPECTED as e:
        raise fail(e) from None
    except KeyboardInterrupt:
        sys.exit(0)


COMMANDS = [serve_cmd]
