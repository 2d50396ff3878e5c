"""The domain's vocabulary, shared by the service (`app/`) and the trainer (`trainer/`).

A leaf package: it imports neither of them (import-linter contract), so both may use it. Every value here is
declared once; the database constraints, the Pydantic models, the CLI choices and the trainer's flag checks read it.
"""
