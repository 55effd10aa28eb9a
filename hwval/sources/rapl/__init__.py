"""CPU energy from the Linux powercap tree (RAPL): the ``rapl`` driver (:mod:`.source`), discovery
of the domains and their stream names (:mod:`.zones`), one domain's counter unwrapped
(:mod:`.counter`), and whether this user may read the counters (:mod:`.permissions`)."""

from hwval.sources.rapl.source import OPTIONS, RaplSource, create

__all__ = ["OPTIONS", "RaplSource", "create"]
