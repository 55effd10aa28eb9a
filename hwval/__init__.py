"""hwval: validate software energy meters against hardware power meters.

In a workload: ``import hwval; hwval.mark("epoch", epoch=3)`` records an event in the running
capture (a no-op outside one).
"""

from hwval.markers import mark

__version__ = "0.1.0"
__all__ = ["mark", "__version__"]
