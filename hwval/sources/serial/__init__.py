"""Serial power meters: pyserial transport (:mod:`.port`), byte framing helpers (:mod:`.framing`)
and one pure codec plus one device loop per meter (``<meter>_codec.py`` / ``<meter>.py``)."""
