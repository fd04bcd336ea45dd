"""`python -m mimicsearch`: the command line, where no console script is on PATH."""
from .cli import main

if __name__ == "__main__":
    main(prog_name="mimicsearch")
