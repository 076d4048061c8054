"""Cardiac shape pipeline: label maps → meshes → exact per-structure SDF samples → VecSet autoencoder."""

__version__ = "0.1.0"
