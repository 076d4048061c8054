"""Distributed, resumable training of one run: ``trainer.train`` reads top to bottom over ``state.RunState``
and ``loop.train_one_epoch`` / ``loop.validate``; ``run`` is what torchrun starts, ``launch`` starts torchrun."""
