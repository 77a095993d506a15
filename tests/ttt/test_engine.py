import copy
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.optim.adam import adam

from tttlab.retrieval import KNNIndex
from tttlab.ttt import (
    NonFiniteError,
    TTTConfig,
    auto_chunk_size,
    finetune,
    reference_ttt,
    ttt_grid,
    ttt_logits,
)
from tttlab.ttt import engine as engine_module
from tttlab.ttt.engine import _fused_adam, _per_point_adam, _private_adam_ok


class TinyMLP(nn.Module):
    """A head with a hidden layer: TTT tunes only `classifier`, on `features(x)`."""

    def __init__(self, d: int, hidden: int, classes: int):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(d, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, classes)

    def features(self, x):
        return self.hidden(x)

    def forward(self, x):
        return self.classifier(self.features(x))


def problem(n=1500, d=6, classes=4, queries=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, classes, generator=g) + torch.randn(n, classes, generator=g)).argmax(1)
    return x, y, torch.randn(queries, d, generator=g)


def linear_problem(k=10, classes=4, queries=9):
    """(weight, bias, pool_x, pool_y, query_x, neighbours): a head and neighbours for ttt_logits."""
    pool_x, pool_y, query_x = problem(n=200, classes=classes, queries=queries)
    _, nbr = KNNIndex().fit(pool_x).search(query_x, k)
    head = nn.Linear(6, classes)
    return head.weight, head.bias, pool_x, pool_y, query_x, torch.from_numpy(nbr)


def engine(head, pool_x, pool_y, query_x, cfg):
    """The batched path: neighbours in the head's feature space, then the engine."""
    feats = head.features if hasattr(head, "features") else (lambda x: x)
    clf = head.classifier if hasattr(head, "classifier") else head
    with torch.no_grad():
        pool_h, query_h = feats(pool_x), feats(query_x)
    _, nbr = KNNIndex().fit(pool_h).search(query_h, cfg.k)
    return ttt_logits(
        clf.weight,
        clf.bias,
        pool_h,
        pool_y,
        query_h,
        torch.from_numpy(nbr),
        cfg,
    )


@pytest.mark.parametrize("method, k, epochs", [("erm", 30, 20), ("sequential", 10, 2)])
@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("head_kind", ["linear", "mlp"])
def test_engine_gives_the_numbers_of_the_reference_loop(method, k, epochs, l2, head_kind):
    torch.manual_seed(0)
    pool_x, pool_y, query_x = problem()
    head = nn.Linear(6, 4) if head_kind == "linear" else TinyMLP(6, 16, 4)
    cfg = TTTConfig(k=k, epochs=epochs, lr=0.05, method=method, l2=l2)
    ref = reference_ttt(head, pool_x, pool_y, query_x, cfg)
    out = engine(head, pool_x, pool_y, query_x, replace(cfg, chunk_size=16))
    assert torch.equal(out.argmax(1), ref.argmax(1))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, head(query_x), atol=1e-3), "fine-tuning changed the logits"


@pytest.mark.parametrize("method, k, epochs", [("erm", 30, 20), ("sequential", 10, 2)])
def test_engine_stays_at_float64_accuracy_when_the_head_is_confident(method, k, epochs):
    # Noise-free labels and a head aligned with them: p_y is near 1 at most neighbours, where
    # float32 "softmax - onehot" is pure rounding noise that Adam amplifies into updates.
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 4, generator=g)
    pool_x, query_x = torch.randn(1500, 6, generator=g), torch.randn(40, 6, generator=g)
    pool_y = (pool_x @ teacher).argmax(1)
    head = nn.Linear(6, 4)
    with torch.no_grad():
        head.weight.copy_(3 * teacher.T)
        head.bias.zero_()
    cfg = TTTConfig(k=k, epochs=epochs, lr=0.05, method=method)
    exact = reference_ttt(
        copy.deepcopy(head).double(), pool_x.double(), pool_y, query_x.double(), cfg
    )
    out = engine(head, pool_x, pool_y, query_x, cfg)
    torch.testing.assert_close(out.double(), exact, atol=1e-4, rtol=0)
    if method == "sequential":  # the plain float32 loop is far off here: the case is exercised
        float32_loop = reference_ttt(head, pool_x, pool_y, query_x, cfg).double()
        assert (float32_loop - exact).abs().max() > 1e-2


@pytest.mark.parametrize(
    "classes, method", [(10, "erm"), (40, "erm"), (10, "sequential")], ids=["BCK", "BKC", "seq"]
)
def test_a_points_logits_are_bit_identical_whatever_chunk_or_company_it_runs_in(classes, method):
    # The promise of the module doc: the same bits for a point whatever the chunk size, the rest
    # of the test set, its order, or its place in the (padded) last chunk. Sizes as the demo's
    # (d = 25, k = 64+), where torch's softmax splits a chunk between threads.
    pool_x, pool_y, query_x = problem(n=3000, d=25, classes=classes, queries=57)
    head = nn.Linear(25, classes)
    epochs = 3 if method == "erm" else 1
    cfg = TTTConfig(k=64, epochs=epochs, lr=0.05, method=method, chunk_size=51)
    whole = engine(head, pool_x, pool_y, query_x, cfg)
    for chunk in (1, 2, 5, 16, 64):
        assert torch.equal(
            engine(head, pool_x, pool_y, query_x, replace(cfg, chunk_size=chunk)), whole
        )
    perm = torch.randperm(57, generator=torch.Generator().manual_seed(3))
    assert torch.equal(engine(head, pool_x, pool_y, query_x[perm], cfg), whole[perm])
    for n in (1, 2, 5, 50):  # the last points sit at every kind of place in the last chunk
        assert torch.equal(engine(head, pool_x, pool_y, query_x[-n:], cfg), whole[-n:])


def test_chunk_size_is_a_setting_that_never_comes_from_free_memory():
    assert auto_chunk_size(50, 512, 1000, "cuda") == auto_chunk_size(50, 512, 1000, "cuda")
    assert auto_chunk_size(50, 512, 1000, "cuda") > auto_chunk_size(50, 512, 1000, "cpu") >= 2
    W, b, pool_x, pool_y, query_x, nbr = linear_problem()
    cfg = TTTConfig(k=10, epochs=3)
    automatic = ttt_logits(W, b, pool_x, pool_y, query_x, nbr, cfg)
    recorded = ttt_logits(W, b, pool_x, pool_y, query_x, nbr, replace(cfg, chunk_size=7))
    assert torch.equal(automatic, recorded)  # the one setting: cfg.chunk_size, memory only
    with pytest.raises(TypeError, match="chunk_size"):
        ttt_logits(W, b, pool_x, pool_y, query_x, nbr, cfg, chunk_size=7)


def test_only_the_first_k_neighbours_are_used():
    # Neighbours found once at the largest k serve every smaller k.
    W, b, pool_x, pool_y, query_x, nbr = linear_problem(k=30)
    cfg = TTTConfig(k=10, epochs=3)
    assert torch.equal(
        ttt_logits(W, b, pool_x, pool_y, query_x, nbr, cfg),
        ttt_logits(W, b, pool_x, pool_y, query_x, nbr[:, :10], cfg),
    )
    with pytest.raises(ValueError, match="neighbours holds 30 neighbours per point but cfg.k=31"):
        ttt_logits(W, b, pool_x, pool_y, query_x, nbr, replace(cfg, k=31))


def adam_weights(steps: int = 5) -> torch.Tensor:
    """W after `steps` of the engine's Adam step on a fixed gradient."""
    g = torch.Generator().manual_seed(0)
    W, grad = torch.randn(3, 4, 9, generator=g), torch.randn(3, 4, 9, generator=g)
    step = _fused_adam(W, grad, TTTConfig(lr=0.05))
    for _ in range(steps):
        step()
    return W


def test_the_private_fused_adam_gives_the_public_apis_weights():
    g = torch.Generator().manual_seed(0)
    W, grad = torch.randn(3, 4, 9, generator=g), torch.randn(3, 4, 9, generator=g)
    m, v, t = torch.zeros_like(W), torch.zeros_like(W), torch.zeros(())
    for _ in range(5):
        adam(
            [W], [grad], [m], [v], [], [t], fused=True, amsgrad=False, beta1=0.9, beta2=0.999,
            lr=0.05, weight_decay=0.0, eps=1e-8, maximize=False,
        )  # fmt: skip
    assert _private_adam_ok("cpu", torch.float32)
    assert torch.equal(adam_weights(), W)


def renamed_kernel(*args, **kwargs):
    raise TypeError("_fused_adam_() got an unexpected keyword argument 'beta1'")


@pytest.mark.parametrize("kernel", [None, renamed_kernel], ids=["missing", "changed"])
def test_without_a_working_private_kernel_the_public_adam_takes_over(monkeypatch, kernel):
    expected = adam_weights()
    monkeypatch.setattr(engine_module, "_PRIVATE_FUSED_ADAM", kernel)
    _private_adam_ok.cache_clear()
    try:
        assert not _private_adam_ok("cpu", torch.float32)
        assert torch.equal(adam_weights(), expected)
    finally:
        _private_adam_ok.cache_clear()


def test_the_per_point_adam_step_is_the_fused_kernels_bit_for_bit():
    # Gradients over 7 decades and learning rates that round differently in float32.
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(6, 4, 16, generator=g)
    grads = [torch.randn(6, 4, 16, generator=g) * 10 ** (torch.rand(6, 4, 16, generator=g) * 7 - 6)
             for _ in range(30)]  # fmt: skip
    lr_B = torch.tensor([1e-3, 5e-3, 0.0123, 0.05, 0.1, 0.3], dtype=torch.float64)
    W, grad = W0.clone(), torch.empty_like(W0)
    step = _per_point_adam(W, grad, TTTConfig(), lr_B)
    for g_ in grads:
        grad.copy_(g_)
        step()
    for b, lr in enumerate(lr_B.tolist()):
        W_alone, grad = W0[b : b + 2].clone(), torch.empty_like(W0[b : b + 2])
        step = _fused_adam(W_alone, grad, TTTConfig(lr=lr))
        for g_ in grads:
            grad.copy_(g_[b : b + 2])
            step()
        assert torch.equal(W[b], W_alone[0]), f"lr={lr}"


def test_zero_epochs_leave_the_global_head():
    W, b = torch.randn(3, 5), torch.randn(3)
    W_BCD, b_BC = finetune(
        W, b, torch.randn(4, 7, 5), torch.randint(0, 3, (4, 7)), TTTConfig(k=7, epochs=0)
    )
    assert torch.equal(W_BCD[2], W) and torch.equal(b_BC[2], b)


def test_a_strong_pull_keeps_the_weights_near_the_global_head():
    W, b = torch.randn(3, 5), torch.randn(3)
    X, y = torch.randn(2, 20, 5), torch.randint(0, 3, (2, 20))
    W0 = torch.cat([W, b[:, None]], 1)

    def tuned(cfg):
        W_BCD, b_BC = finetune(W, b, X, y, cfg)
        return torch.cat([W_BCD, b_BC[:, :, None]], 2)

    free = tuned(TTTConfig(k=20, epochs=30, lr=0.1))
    pulled = tuned(TTTConfig(k=20, epochs=30, lr=0.1, l2=100.0))
    assert (pulled - W0).norm() < 0.5 * (free - W0).norm()


def test_auto_chunk_size_shrinks_for_bigger_heads():
    small, big = auto_chunk_size(200, 25, 10), auto_chunk_size(50, 512, 1000)
    assert small > big >= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "sgd"}, "method='sgd' is not supported"),
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": 2.5}, "k must be an integer"),
        ({"epochs": True}, "epochs must be an integer, got True"),
        ({"lr": 0.0}, "lr must be a number > 0"),
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"l2": -1.0}, "l2 must be a number >= 0"),
        ({"l2": float("inf")}, "l2 must be a finite number"),
        ({"l2": float("nan")}, "l2 must be a finite number"),
        ({"betas": (1.0, 0.999)}, r"betas\[0\] must be in \[0, 1\)"),
        ({"eps": "1e-8"}, "eps must be a number"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
        ({"chunk_size": -1}, "chunk_size must be an integer >= 1, got -1"),
    ],
)
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TTTConfig(**kwargs)


def _drop_last_label(args):
    args["pool_y"] = args["pool_y"][:-1]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(weight_CD=torch.randn(4, 7)), "pool_x has 6 features per row but the"),
        (lambda a: a.update(bias_C=torch.zeros(5)), "bias_C must be a floating-point vector of 4"),
        (lambda a: a["neighbours"].__setitem__((0, 0), -1), "neighbours holds 1 indices outside"),
        (lambda a: a["neighbours"].__setitem__((2, 1), 200), r"range \[0, 200\], pool has 200"),
        (lambda a: a.update(neighbours=a["neighbours"].float()), "must hold integer pool indices"),
        (lambda a: a.update(neighbours=a["neighbours"][0]), r"neighbours has shape \(10,\)"),
        (lambda a: a.update(neighbours=a["neighbours"][:, :5]), "5 neighbours per point but cfg"),
        (lambda a: a.update(query_x=a["query_x"][:8]), "but query_x has 8 rows"),
        (lambda a: a["pool_y"].__setitem__(3, 4), r"pool_y has labels in \[0, 4\] but the model"),
        (lambda a: a["pool_y"].__setitem__(3, -1), r"pool_y has labels in \[-1, 3\]"),
        (_drop_last_label, r"pool_y has shape \(199,\) but its inputs have 200 rows"),
        (lambda a: a["pool_x"].__setitem__((slice(5, 7), 0), float("nan")), "pool_x has 2 rows"),
        (lambda a: a["query_x"].__setitem__((1, 2), float("inf")), "query_x has 1 rows with NaN"),
    ],
)
def test_ttt_logits_says_what_is_wrong_before_any_work(change, message):
    W, b, pool_x, pool_y, query_x, nbr = linear_problem()
    args = dict(weight_CD=W, bias_C=b, pool_x=pool_x, pool_y=pool_y, query_x=query_x)
    args.update(neighbours=nbr, cfg=TTTConfig(k=10, epochs=3))
    change(args)
    with pytest.raises(ValueError, match=message):
        ttt_logits(**args)


def test_finetune_checks_its_inputs_too():
    W, b = torch.randn(3, 5), torch.randn(3)
    X, y = torch.randn(2, 8, 5), torch.randint(0, 3, (2, 8))
    cfg = TTTConfig(k=8, epochs=2)
    with pytest.raises(ValueError, match="X_BKD has 4 features per row but the head's weight_CD"):
        finetune(W, b, X[:, :, :4], y, cfg)
    with pytest.raises(
        ValueError, match=r"y_BK has labels in \[3, 3\] but the model has 3 classes"
    ):
        finetune(W, b, X, y.clone().fill_(3), cfg)
    with pytest.raises(ValueError, match="X_BKD holds 8 neighbours per point but cfg.k=9"):
        finetune(W, b, X, y, TTTConfig(k=9))
    W_BCD, _ = finetune(W, b, torch.cat([X, X], 1), torch.cat([y, y], 1), cfg)
    assert torch.equal(W_BCD, finetune(W, b, X, y, cfg)[0]), "the first k neighbours are used"


def test_diverging_fine_tuning_raises_instead_of_returning_nan():
    # A finite but absurd lr overflows the weights; the logits would be NaN.
    W, b, pool_x, pool_y, query_x, nbr = linear_problem()
    cfg = TTTConfig(k=10, epochs=5, lr=1e38)
    with pytest.raises(NonFiniteError, match="9 of 9 test points got NaN or inf logits.*lower lr"):
        ttt_logits(W, b, pool_x, pool_y, query_x, nbr, cfg)
    with pytest.raises(NonFiniteError, match="test points got NaN or inf weights"):
        finetune(W, b, pool_x[nbr], pool_y[nbr], cfg)


def grid_problem(classes=10, queries=21):
    """d = 25 as the demo's head."""
    pool_x, pool_y, query_x = problem(n=1000, d=25, classes=classes, queries=queries)
    _, nbr = KNNIndex().fit(pool_x).search(query_x, 16)
    head = nn.Linear(25, classes)
    return head.weight, head.bias, pool_x, pool_y, query_x, torch.from_numpy(nbr)


@pytest.mark.parametrize(
    "classes, method", [(10, "erm"), (40, "erm"), (10, "sequential")], ids=["BCK", "BKC", "seq"]
)
def test_a_learning_rate_per_point_gives_each_point_its_own_runs_bits(classes, method):
    W, b, pool_x, pool_y, query_x, nbr = grid_problem(classes)
    cfg = TTTConfig(k=16, epochs=4 if method == "erm" else 1, method=method, l2=0.1, chunk_size=8)
    lrs = [0.001, 0.0123, 0.05, 0.3]
    lr_B = torch.tensor(lrs, dtype=torch.float64)[torch.arange(21) % 4]
    out = ttt_logits(W, b, pool_x, pool_y, query_x, nbr, cfg, lr_B=lr_B)
    for lr in lrs:
        at = lr_B == lr
        alone = ttt_logits(W, b, pool_x, pool_y, query_x[at], nbr[at], replace(cfg, lr=lr))
        assert torch.equal(out[at], alone), f"lr={lr}"
    assert torch.equal(
        out[:1], ttt_logits(W, b, pool_x, pool_y, query_x[:1], nbr[:1], replace(cfg, lr=0.001))
    )


@pytest.mark.parametrize("method", ["erm", "sequential"])
def test_logits_recorded_on_the_way_are_those_of_separate_runs(method):
    W, b, pool_x, pool_y, query_x, nbr = grid_problem()
    cfg = TTTConfig(k=16, epochs=6, lr=0.05, method=method, chunk_size=8)
    out = ttt_logits(W, b, pool_x, pool_y, query_x, nbr, cfg, record_epochs=[5, 0, 2])
    assert out.shape == (3, 21, 10)
    for i, epochs in enumerate([5, 0, 2]):
        separate = ttt_logits(W, b, pool_x, pool_y, query_x, nbr, replace(cfg, epochs=epochs))
        assert torch.equal(out[i], separate), f"epochs={epochs}"
    torch.testing.assert_close(out[1], (query_x @ W.T + b).detach())  # 0: the global head


def test_a_grid_is_one_run_per_k_with_the_bits_of_one_run_per_grid_point():
    W, b, pool_x, pool_y, query_x, nbr = grid_problem()
    cfg = TTTConfig(l2=0.1, chunk_size=16)  # k, lr and epochs come from the grid
    ks, lrs, epochs = (3, 16, 12), (0.01, 0.1), (1, 4)
    grid = ttt_grid(W, b, pool_x, pool_y, query_x, nbr, cfg, ks, lrs, epochs)
    assert grid.shape == (3, 2, 2, 21, 10)  # (k, lr, epochs, query, class)
    for i, k in enumerate(ks):
        for j, lr in enumerate(lrs):
            for e, n in enumerate(epochs):
                one = ttt_logits(
                    W, b, pool_x, pool_y, query_x, nbr, replace(cfg, k=k, lr=lr, epochs=n)
                )
                assert torch.equal(grid[i, j, e], one), f"k={k}, lr={lr}, epochs={n}"


@pytest.mark.parametrize("k", [5, 7, 9, 11])
def test_small_odd_k_is_chunk_invariant_too(k):
    # CPU BLAS gives a small odd k position-dependent bits; the engine pads k to even for it.
    W, b, pool_x, pool_y, query_x, nbr = grid_problem()
    cfg = TTTConfig(k=k, epochs=2, lr=0.1, chunk_size=16)
    whole = ttt_logits(W, b, pool_x, pool_y, query_x, nbr, cfg)
    for chunk in (1, 5):
        again = ttt_logits(W, b, pool_x, pool_y, query_x, nbr, replace(cfg, chunk_size=chunk))
        assert torch.equal(again, whole)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr_B": torch.full((8,), 0.1)}, r"lr_B has shape \(8,\): .* one per query \(9,\)"),
        ({"lr_B": torch.full((9, 1), 0.1)}, r"lr_B has shape \(9, 1\)"),
        ({"lr_B": torch.zeros(9)}, "lr_B must hold finite learning rates > 0, got 9 others"),
        ({"lr_B": [0.1] * 8 + [float("nan")]}, r"got 1 others \(first: nan at index 8\)"),
        ({"lr_B": torch.ones(9, dtype=torch.bool)}, "lr_B must hold real learning rates"),
        ({"record_epochs": []}, "record_epochs must be a non-empty sequence of integers"),
        ({"record_epochs": 3}, "record_epochs must be a non-empty sequence of integers, got 3"),
        ({"record_epochs": (1, 2.5)}, r"record_epochs\[1\] must be an integer, got 2.5"),
        ({"record_epochs": (1, -1)}, r"record_epochs\[1\] must be an integer >= 0, got -1"),
        ({"record_epochs": (2, 1, 2)}, r"record_epochs=\(2, 1, 2\) repeats \[2\]"),
        ({"record_epochs": (1, 4)}, r"record_epochs=\(1, 4\) goes past cfg.epochs=3: raise"),
    ],
)
def test_lr_B_and_record_epochs_are_checked_before_any_work(kwargs, message):
    W, b, pool_x, pool_y, query_x, nbr = linear_problem()
    with pytest.raises(ValueError, match=message):
        ttt_logits(W, b, pool_x, pool_y, query_x, nbr, TTTConfig(k=10, epochs=3), **kwargs)


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"ks": (3, 11)}, r"ks=\(3, 11\) goes up to 11 but neighbours holds 10 per point"),
        ({"ks": ()}, "ks must be a non-empty sequence of integers"),
        ({"ks": (0, 3)}, r"ks\[0\] must be an integer >= 1, got 0"),
        ({"lrs": (0.1, -0.1)}, r"lrs must hold finite learning rates > 0, got 1 others"),
        ({"epochs": (5, 5)}, r"epochs=\(5, 5\) repeats \[5\]"),
    ],
)
def test_a_bad_grid_is_rejected_before_any_work(grid, message):
    W, b, pool_x, pool_y, query_x, nbr = linear_problem()
    args = dict(ks=(3, 10), lrs=(0.01, 0.1), epochs=(1, 5)) | grid
    with pytest.raises(ValueError, match=message):
        ttt_grid(W, b, pool_x, pool_y, query_x, nbr, TTTConfig(), **args)


def test_a_diverging_learning_rate_names_itself():
    W, b, pool_x, pool_y, query_x, nbr = linear_problem()
    lr_B = torch.tensor([0.01] * 8 + [1e38], dtype=torch.float64)
    with pytest.raises(
        NonFiniteError, match=r"1 of 9 test points .* diverged with lr in \[1e\+38\]"
    ):
        ttt_logits(W, b, pool_x, pool_y, query_x, nbr, TTTConfig(k=10, epochs=5), lr_B=lr_B)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["erm", "sequential"])
def test_the_engine_on_cuda_gives_the_cpu_numbers(method):
    W, b, pool_x, pool_y, query_x, nbr = linear_problem()
    cfg = TTTConfig(k=10, epochs=20, lr=0.05, method=method)
    cpu = ttt_logits(W, b, pool_x, pool_y, query_x, nbr, cfg)
    gpu = ttt_logits(W, b, pool_x, pool_y, query_x, nbr, cfg, device="cuda")
    assert gpu.device.type == "cpu"  # logits come back to the host
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)
