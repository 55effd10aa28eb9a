"""Bench power analyzers over VISA (pyvisa): Yokogawa WT300E family, R&S HMC8015, Keysight N6705C.

``scpi`` holds the transport, the pure codecs and the instrument profiles
(``firmware_configs/scpi/*.toml``); each driver module is the device loop for one family.
"""
