"""reviewpipe: raw movie reviews -> vocabulary -> Parquet shards -> LSTM/GRU -> batch scores.

The stages and their contracts are described in DESIGN.md; every column name and
artifact path lives in :mod:`reviewpipe.constants`.
"""

__version__ = "0.1.0"
