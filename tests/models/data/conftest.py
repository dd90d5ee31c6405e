import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the clips are made of many small tensor ops: extra intra-op threads only add overhead on a busy box
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
