"""Exit codes and how a library error becomes a one-line CLI error (never a traceback).

0 success; 1 bad input or a failed check (the message names file, line or field and the
fix); 2 usage (a wrong option, Click's own) and input whose shape the command cannot take
(`schema.SchemaError`: columns that fit no note layout or two, a role named on a missing
column, two files holding one note id, an ICD version other than 9 or 10): the fix is in
the command line or the files given, not in a row; 75 busy: another process is writing the
directory, try again later (EX_TEMPFAIL, which schedulers retry).
"""
from __future__ import annotations

import click

from ..fileio import DirectoryBusy
from ..schema import SchemaError

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_BUSY = 75


# What a command turns into a one-line error: bad input and options (ValueError, and
# UnicodeError within it), files (OSError: missing, unreadable, read-only, disk full), and
# truncated compressed input (EOFError). Anything else is a bug and keeps its traceback.
EXPECTED = (ValueError, OSError, EOFError)


class Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


def fail(e: Exception) -> Failure:
    if isinstance(e, SchemaError):
        return Failure(str(e), EXIT_USAGE)
    return Failure(str(e), EXIT_BUSY if isinstance(e, DirectoryBusy) else EXIT_BAD_INPUT)
