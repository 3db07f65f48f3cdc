import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The model tests use tiny tensors: one intra-op thread is as fast alone and avoids
    OpenMP oversubscription (10x slowdowns) when other processes share the 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
