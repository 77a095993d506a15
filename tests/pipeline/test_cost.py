"""The run-time estimate: the work it counts grows as the run does."""

from tttlab.config import Config, ModelConfig
from tttlab.pipeline.cost import Sizes, cnn_forward_flops, run_seconds, run_work
from tttlab.ttt import TTTConfig

FMNIST = Sizes(n_train=50_000, n_val=10_000, n_test=10_000, d_in=784, classes=10)


def test_a_wider_cnn_costs_more_per_image():
    assert 0 < cnn_forward_flops(25) < cnn_forward_flops(192) < cnn_forward_flops(1152)


def test_ttt_work_grows_with_its_epochs_and_k():
    base = run_work(Config(), FMNIST)[0]
    longer = run_work(Config(ttt=TTTConfig(epochs=100)), FMNIST)[0]
    wider = run_work(Config(ttt=TTTConfig(k=100)), FMNIST)[0]
    assert base < longer and base < wider


def test_a_checkpoint_trains_nothing():
    cfg = Config(model=ModelConfig(checkpoint="model.safetensors"))
    assert run_work(cfg, FMNIST)[1] == 0 and run_work(Config(), FMNIST)[1] > 0


def test_seconds_are_work_over_the_rate_plus_the_steps():
    fast, slow = run_seconds(Config(), FMNIST, 1e12), run_seconds(Config(), FMNIST, 1e9)
    assert 0 < fast < slow
