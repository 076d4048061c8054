"""The autoencoder (``vecset``), farthest point sampling (``fps``), how it sees a case (``items``) and its
checkpoints (``checkpoint``, with ``load_model``). Used by training and evaluation alike."""
