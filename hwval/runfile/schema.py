"""Names of the run-file schema (version 1), shared by the layout writer, the journal and the reader."""

SCHEMA_NAME = "hwval-run"
SCHEMA_VERSION = 1
EVENT_FIELDS = ("t", "name", "stream", "detail")
JOURNAL_SUFFIX = ".journal"

# -- written by the capture (issue 8, write side) ---------------------------------------------
#: Event: a signal the capture received and forwarded to the workload (detail: signal, action).
EVENT_SIGNAL = "signal"
#: Root attributes: marks the workload sent that never reached the capture (sequence gaps), and
#: marks refused because their t_ns lay outside the capture (before its start, or in the future).
ATTR_MARKS_LOST = "marks_lost"
ATTR_MARKS_REFUSED = "marks_refused"
