"""Analysis: how far each software meter is from the hardware reference, with what confidence,
how to correct it, and whether a new meter passes.

- :mod:`~hwval.analysis.metrics`: agreement metrics as pure array functions (scipy style).
- :mod:`~hwval.analysis.bootstrap`: moving-block bootstrap intervals (Politis-White block length).
- :mod:`~hwval.analysis.phases`: the run's phases from its events (idle, pulses, workload, marks).
- :mod:`~hwval.analysis.compare`: ``hwval analyze`` (alignment by :func:`hwval.sync.align`).
- :mod:`~hwval.analysis.fit` and :mod:`~hwval.analysis.calibration`: ``hwval calibrate`` and its
  TOML records.
- :mod:`~hwval.analysis.external`, :mod:`~hwval.analysis.validate`, :mod:`~hwval.analysis.mlperf`:
  ``hwval validate`` for streams and files, and the MLPerf meter-qualification protocol.
- :mod:`~hwval.analysis.carbon`: CO2 from energy.
"""
