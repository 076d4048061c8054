"""Every validation case reconstructed and scored (``run``, ``case``, ``reconstruct``, ``metrics``), the
report's figures (``plots``) and every case's latent set (``latents``); the model comes from
``vecset.model.checkpoint``, never from the training package."""
