"""Names of the run-file schema (version 1), shared by the layout writer, the journal and the reader."""

SCHEMA_NAME = "hwval-run"
SCHEMA_VERSION = 1
EVENT_FIELDS = ("t", "name", "stream", "detail")
JOURNAL_SUFFIX = ".journal"
