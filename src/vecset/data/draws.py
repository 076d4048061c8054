"""Random draws keyed by a case id, so that a case's draws do not depend on which other cases a run holds or in
which order: a case added to the data set leaves every other case's samples, items and fitted latents as they were.
"""

from __future__ import annotations

import hashlib

import numpy as np

# What a stream draws for a case; a tag after the case's key keeps the streams apart. numpy seeds ``[a, b]`` and
# ``[a, b, 0]`` alike (trailing zeros do not count), so the tags start at 1 and the sample stream has none.
ITEMS = 1  # training and validation items: vecset.model.items
FIT = 2  # latent fitting's surface and anchor points: vecset.eval.fitting


def case_key(case_id: str) -> int:
    """A stable 64-bit key of a case id (never the salted ``hash()``)."""
    return int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "little")


def case_rng(seed: int, case_id: str, *stream: int) -> np.random.Generator:
    """The generator of one case's draws: the run's ``seed``, the case id, and the ``stream`` (a tag and its keys,
    such as the epoch); no stream: the sample file's own points."""
    return np.random.default_rng([seed, case_key(case_id), *stream])
