"""The trainer's tiny LM fixtures, for the whole rounds a worker runs here."""

from tests.trainer.conftest import tiny_corpus_file, tiny_lm_dir, tiny_tokenizer_dir  # noqa: F401 (fixtures)
