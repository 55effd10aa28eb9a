"""What NVML error codes mean for a capture: retry, skip the key, reopen NVML, or give the GPU up;
and what an ``nvmlInit`` failure means for the user, with the fix.

Sources: NVML API reference (nvmlReturn_t, nvmlInit); docs/measurement.md#errors-and-device-identity.
"""

from __future__ import annotations

import pynvml

#: NVML errors after which the same call may succeed (a gap, then retry).
TRANSIENT_CODES = frozenset({
    pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_TIMEOUT, pynvml.NVML_ERROR_IRQ_ISSUE,
    pynvml.NVML_ERROR_INSUFFICIENT_POWER, pynvml.NVML_ERROR_MEMORY,
    pynvml.NVML_ERROR_OPERATING_SYSTEM, pynvml.NVML_ERROR_INSUFFICIENT_SIZE,
    pynvml.NVML_ERROR_NOT_READY, pynvml.NVML_ERROR_NO_DATA, pynvml.NVML_ERROR_IN_USE,
})
#: NVML errors meaning this GPU cannot give this value at all (old board, old driver, MIG).
UNSUPPORTED_CODES = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
#: NVML errors meaning the library lost its state (driver reloaded, NVML shut down by someone
#: else): the source must be closed and opened again.
REOPEN_CODES = frozenset({pynvml.NVML_ERROR_UNINITIALIZED, pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
                          pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH})
#: NVML errors meaning the GPU is gone until it is reset.
LOST_CODES = frozenset({pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_RESET_REQUIRED,
                        pynvml.NVML_ERROR_GPU_NOT_FOUND})


def error_name(exc: pynvml.NVMLError) -> str:
    """``NVML_ERROR_GPU_IS_LOST``-style name of an NVML error code (for events and counts)."""
    for name in dir(pynvml):
        if name.startswith("NVML_ERROR_") and getattr(pynvml, name) == exc.value:
            return name
    return f"NVML_ERROR_{exc.value}"


#: What an nvmlInit failure means and what to do, by NVML error code ("what; fix").
INIT_ERRORS = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        "no NVIDIA driver on this machine (libnvidia-ml.so.1 not found); install the NVIDIA "
        "driver, or capture without NVML (--no-nvml)",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
        "the NVIDIA kernel driver is not loaded (nvidia-smi fails too); load it ('sudo modprobe "
        "nvidia' or reboot after installing), or use --no-nvml",
    pynvml.NVML_ERROR_NO_PERMISSION:
        "permission denied opening the GPU devices (/dev/nvidia*); add this user to the group "
        "owning them, or use --no-nvml",
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        "the NVML library and the kernel driver versions differ (driver updated without "
        "reboot); reboot or reload the nvidia module, or use --no-nvml",
}


def init_error_message(exc: pynvml.NVMLError) -> str:
    """One line for an ``nvmlInit`` failure: what happened; then, after ``;``, the fix."""
    known = INIT_ERRORS.get(exc.value)
    if known is not None:
        return known
    return f"nvmlInit failed ({error_name(exc)}: {exc}); check nvidia-smi, or use --no-nvml"
