"""Exports: flat JSONL (or CSV for `rich`) that loads in `datasets` and TRL unchanged.

    filters.py   which annotations (ExportFilters, and the filters as the CLI, API and admin page give them)
    query.py     the query per format, the generation texts a batch needs, the tasks passing an agreement filter
    formats.py   one line builder per format (the formats are listed there); margins.py, the margin of a pair
    lines.py     the query read in batches, each row through its format's builder
    writer.py    the file (streamed, with its sha256 sidecar), and the download HTTP serves
    card.py      the dataset card beside an export

The same database and filters give the same bytes; memory stays constant whatever the size.
"""

from app.services.exports.card import LOADING, write_card
from app.services.exports.filters import ExportError, ExportFilters, filters_from_strings, parse_time
from app.services.exports.formats import FORMATS
from app.services.exports.lines import iter_export
from app.services.exports.margins import MARGIN_BY_STRENGTH, margin_for
from app.services.exports.query import KINDS_FOR
from app.services.exports.writer import (
    ExportDownload,
    ExportResult,
    default_filename,
    export_download,
    export_to_data_dir,
    write_export,
    write_weighted_export,
)

__all__ = [
    "FORMATS",
    "KINDS_FOR",
    "LOADING",
    "MARGIN_BY_STRENGTH",
    "ExportDownload",
    "ExportError",
    "ExportFilters",
    "ExportResult",
    "default_filename",
    "export_download",
    "export_to_data_dir",
    "filters_from_strings",
    "iter_export",
    "margin_for",
    "parse_time",
    "write_card",
    "write_export",
    "write_weighted_export",
]
