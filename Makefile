# Long versions of the reliability tests (CI runs the bounded ones in the normal suite).
PYTHON ?= .venv/bin/python
FUZZ_EXAMPLES ?= 2000
CRASH_SEEDS ?= 20

.PHONY: soak
soak:
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
	MIMICSEARCH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) MIMICSEARCH_CRASH_SEEDS=$(CRASH_SEEDS) \
	$(PYTHON) -m pytest -q -W ignore tests/test_fuzz_readers.py tests/test_trust.py \
		tests/test_crash.py tests/test_encode.py::test_resume_after_kill_9_gives_identical_files \
		tests/test_etl.py::test_sync_killed_anywhere_then_rerun_equals_an_uninterrupted_sync \
		tests/test_fuzz_cli.py tests/test_reliability.py
