import pytest
import torch
from hypothesis import settings

# Reproducible property tests: the same examples on every run and no example database, so a
# failure found once cannot be replayed into every later run from a `.hypothesis/` folder (the
# checkout stays as clean as it was). A failing example is printed by hypothesis and belongs in
# a regular parametrised regression test.
settings.register_profile("obliviate", database=None, derandomize=True, deadline=None)
settings.load_profile("obliviate")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
