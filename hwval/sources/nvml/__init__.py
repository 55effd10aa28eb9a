"""NVIDIA GPU power and energy through NVML (``pynvml``): the ``nvml`` driver (:mod:`.source`),
which device is ``cuda:i`` (:mod:`.visible`), what each GPU is and what its readings mean
(:mod:`.devices`), what NVML error codes mean (:mod:`.errors`), and the update-period burst at
open (:mod:`.detect`)."""

from hwval.sources.nvml.errors import init_error_message
from hwval.sources.nvml.source import OPTIONS, NvmlSource, create

__all__ = ["OPTIONS", "NvmlSource", "create", "init_error_message"]
