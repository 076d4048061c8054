"""Per-case data stages: read and validate label maps, mesh them, sample exact per-structure SDFs."""
