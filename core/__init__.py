"""The bottom layer: configuration, the Spark session, table names and Delta I/O, run lineage,
the feature-table contract and the metric definitions. Nothing here imports features/,
training/, calibration/ or jobs/ (tests/unit/test_layers.py)."""
