"""Cardiac shape pipeline: label maps → meshes → exact per-structure SDF samples → VecSet autoencoder.

Layers, each importing only those before it: ``settings`` (every config key, declared once; torch-free),
``data`` (one case at a time, numpy), ``model`` (the autoencoder, its inputs and checkpoints), then ``train``
and ``eval``. ``snakemake_adapter`` is the only module that knows Snakemake; ``preemption`` holds the stop
and resume policy; ``plan`` is a run's settings.json.
"""

__version__ = "0.1.0"
