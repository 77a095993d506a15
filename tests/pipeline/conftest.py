import pytest

from tests.threads import one_thread

one_torch_thread = pytest.fixture(scope="package", autouse=True)(one_thread)
