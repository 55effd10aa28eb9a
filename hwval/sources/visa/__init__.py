"""Bench power analyzers over VISA (pyvisa): Yokogawa WT300E family, R&S HMC8015, Keysight N6705C.

``scpi`` holds the transport, the pure codecs and the instrument profiles
(``hwval/sources/visa/profiles/*.toml``, package data); each driver module is the device loop for one family.
"""
