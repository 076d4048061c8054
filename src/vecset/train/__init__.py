"""Distributed, resumable training of one run: ``trainer.train`` reads top to bottom over ``state.RunState``
and ``loop.train_step`` / ``loop.validate``; ``run`` is what torchrun starts, ``launch`` starts torchrun."""
