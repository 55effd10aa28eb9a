"""Protocol-exact emulators (product code: operators dry-run configurations with them).

Each module named in :data:`EMULATORS` exposes a click command ``cli``; ``hwval emulate NAME``
loads it lazily so one emulator's optional dependency never breaks the others.
"""

EMULATORS = {
    "tasmota": "hwval.emulators.tasmota:cli",
    "esphome": "hwval.emulators.esphome:cli",
    "pzem004t": "hwval.emulators.pzem004t:cli",
    "cse7766": "hwval.emulators.cse7766:cli",
    "wattsup": "hwval.emulators.wattsup:cli",
    "wt300": "hwval.emulators.wt300:cli",
    "hmc8015": "hwval.emulators.hmc8015:cli",
    "n6705": "hwval.emulators.n6705:cli",
    "powercap": "hwval.emulators.powercap:cli",
    "host-bench": "hwval.emulators.host_bench:cli",
}
