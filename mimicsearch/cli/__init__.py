"""`mimicsearch` command line: thin Click commands over library functions.

Each submodule owns one stage's commands and lists them in `COMMANDS`.
"""
from __future__ import annotations

import logging
import warnings

import click

from ..pipeline import TruncationWarning
from . import calibrate, data, encode, export, index, patients, serve, train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mimicsearch")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Clinical-note embeddings: synthesize MIMIC-shaped data, fine-tune, export to ONNX,
    encode corpora and search them, all on CPU.

    \b
    Typical flow:
      mimicsearch synth --patients 500 --out data/
      mimicsearch export MODEL_DIR --out models/minilm
      mimicsearch build-index data/NOTEEVENTS.csv --model models/minilm --out index/
      mimicsearch query index/ "chest pain radiating to left arm"
      mimicsearch query index/ "apixaban held for GI bleed" --mode hybrid   # words + vectors
      mimicsearch patients index/ --subject 4312      # patients like this one
      mimicsearch sync index/ tonight.csv --remove-missing   # nightly: new, edited, retracted
      mimicsearch serve index/                 # search page and API on 127.0.0.1:8000

    \b
    Exit codes: 0 success; 1 bad input (the message names file, line or field);
    2 usage; 75 busy: another process is writing that directory, try again later.
    """
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Commands print a summary's warnings themselves, once, as "warning: ...".
    warnings.filterwarnings("ignore", category=TruncationWarning)


for _module in (data, train, export, encode, index, calibrate, patients, serve):
    for _cmd in _module.COMMANDS:
        main.add_command(_cmd)
