"""What a calibration fit needs from its data, in a module without dependencies so that
``hwval demo`` can size its run from it without loading numpy and scipy at start-up."""

#: A fit needs at least this many bins whose meter power spans this share of its mean, or the
#: gain is not identified (all readings at one level fix only gain * level + offset).
MIN_FIT_BINS = 10
MIN_RANGE_SHARE = 0.05
