"""Capture: sources -> recorder -> documents -> subscribers (HDF5 writer, journal, live view)."""
