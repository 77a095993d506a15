import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """These tests train tiny heads, where waking torch's thread pool costs more than the maths
    (about 20x on a busy 2-core machine): one thread here, the old setting after this folder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
