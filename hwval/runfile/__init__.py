"""The run file: the only code that knows the HDF5 schema (names, layout, journal, reading).

Every later stage reads runs with :func:`open_run` and adds its groups (``/sync``,
``/analysis``) through :meth:`RunFile.replace_derived`; raw data is never rewritten.
"""

from hwval.runfile.reader import (DerivedEntry, Event, RunFile, RunFileError, StreamData,
                                  StreamReader, open_run)

__all__ = ["DerivedEntry", "Event", "RunFile", "RunFileError", "StreamData", "StreamReader", "open_run"]
