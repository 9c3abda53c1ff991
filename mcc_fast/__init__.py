"""mcc_fast: fast MCC talking-head generation (multi-scale compensatory codebooks)."""
__version__ = "0.1.0"
