import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """Tiny language models: one torch thread is faster than waking the pool on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
