import faiss
import torch
from threadpoolctl import threadpool_info

from tttlab.threads import compute_threads


def test_compute_threads_caps_torch_blas_and_openmp_then_restores_them():
    torch_before, omp_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    with compute_threads(1):
        assert torch.get_num_threads() == 1
        assert faiss.omp_get_max_threads() == 1, "FAISS searches with OpenMP"
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == (torch_before, omp_before)
