"""The shared setting checks: each refusal names the setting, what it got and the fix."""

import pytest
import torch

from tttlab.tensors import check_device


def test_cpu_and_cuda_pass_where_they_exist():
    check_device("cpu")
    check_device(torch.device("cpu"))
    if torch.cuda.is_available():
        check_device("cuda:0")


@pytest.mark.parametrize("bad", ["gpu", "mps", 3])
def test_an_unknown_device_names_the_choices(bad):
    with pytest.raises(ValueError, match="use one of cpu, cuda"):
        check_device(bad, "--ttt.device")


def test_cuda_without_a_gpu_names_the_flag_and_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA device: use --ttt.device cpu"):
        check_device("cuda", "--ttt.device")
    with pytest.raises(ValueError, match="use device='cpu'"):
        check_device("cuda:1")
