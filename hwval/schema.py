"""Names of the run-file schema (version 1), shared by the writer and the store."""

SCHEMA_NAME = "hwval-run"
SCHEMA_VERSION = 1
EVENT_FIELDS = ("t", "name", "stream", "detail")
EVENT_NAMES = ("workload_start", "workload_end", "mark", "pulse_start", "pulse_chip", "pulse_end",
               "gap_start", "gap_end", "reconnect", "error")
JOURNAL_SUFFIX = ".journal"
