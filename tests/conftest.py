import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo():
    return REPO

from hypothesis import settings  # noqa: E402

# Timing varies a lot on a shared 2-core machine; correctness, not speed, is what the property tests check.
settings.register_profile("netquant", deadline=None)
settings.load_profile("netquant")
