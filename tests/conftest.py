"""Shared fixtures; each fixtures module belongs to one stage."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from fixtures.data import *
from fixtures.models import *
from fixtures.server import *
from fixtures.vectors import *
