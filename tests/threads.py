"""One torch thread for a test folder whose tests train tiny models, where waking torch's thread
pool costs more than the maths (about 20x on a busy 2-core machine); the old count afterwards.

    one_torch_thread = pytest.fixture(scope="package", autouse=True)(one_thread)   # a conftest.py
"""

import torch


def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
