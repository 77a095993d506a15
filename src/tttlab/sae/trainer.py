"""The SAE's training loop, readable top to bottom.

    sae, history = train_sae(X_ND, SaeConfig(d_in=X_ND.shape[1]), SaeTrainConfig(epochs=20))
    evaluate(sae, X_test)   # {'mse', 'fvu', 'dead_fraction', 'mean_active'}

Each step: k from the k warm-up, lr from the warm-up and cosine decay, loss = FVU + auxk_alpha *
AuxK (the dead latents fit the residual), backward, drop the decoder gradient's component along
each decoder row, clip the gradient norm, Adam, renormalise the decoder rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from tttlab.checks import NonFiniteError
from tttlab.sae.config import SaeConfig, SaeTrainConfig
from tttlab.sae.model import SparseCoder, check_width
from tttlab.tensors import as_matrix

EVAL_BATCH = 4096


def k_at(step: int, k: int, k_start: int, warmup: int) -> int:
    """The k warm-up: k_start at step 0, down linearly to k at step `warmup`, k afterwards."""
    if not k_start or k_start <= k or step >= warmup:
        return k
    return round(k_start + (k - k_start) * step / warmup)


def lr_at(step: int, lr: float, warmup: int, decay: bool, total: int) -> float:
    """Linear warm-up from 0 over `warmup` steps, then cosine decay to 0 at step `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if not decay:
        return lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def check_rows(x_ND: torch.Tensor, where: str) -> None:
    """Rows an SAE can learn from: at least two, not all the same (FVU divides by their spread);
    otherwise the real cause, instead of a loss that is NaN from its first step."""
    N = len(x_ND)
    if N < 2:
        raise ValueError(
            f"{where} has {N} row(s): an SAE learns the variation between rows and needs at "
            "least 2 (in practice thousands); pass more features"
        )
    same = all(bool((x_ND[s : s + 65536] == x_ND[0]).all()) for s in range(0, N, 65536))
    if same:
        zero = " (every row is all zeros)" if not bool(x_ND[0].any()) else ""
        raise ValueError(
            f"{where}: all {N} rows are the same{zero}, so there is no variation to encode (zero "
            "variance): check how the features were extracted"
        )


def train_sae(
    x_ND: np.ndarray | torch.Tensor,
    cfg: SaeConfig,
    train: SaeTrainConfig,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    where: str = "the training features",
) -> tuple[SparseCoder, list[dict]]:
    """Train a top-k SAE on the rows of x_ND; returns it and one metrics dict per epoch (over
    that epoch's training batches): mse, fvu, dead_fraction (latents that never fired in the
    epoch), mean_active (active latents per row), auxk, k and lr at the epoch's end, seconds,
    samples_per_s."""
    x_ND = torch.from_numpy(as_matrix(x_ND, where))
    N, D = x_ND.shape
    check_rows(x_ND, where)
    device = torch.device(train.device)
    sae = SparseCoder(cfg, device=device, seed=train.seed)
    check_width(sae, D, where)
    B = min(train.batch_size, N)
    steps_per_epoch = math.ceil(N / B)
    total = train.epochs * steps_per_epoch
    lr_warm = min(train.lr_warmup_steps, total // 10)  # short runs spend most steps trained
    k_warm = min(train.k_warmup_steps, total // 2)  # and end at the real k
    decay_end = train.total_steps or total
    k_aux = train.k_aux or D // 2

    mean_D = x_ND.mean(0, dtype=torch.float64).float()
    with torch.no_grad():
        sae.b_dec.copy_(mean_D)  # start the decoder bias at the data's centre
    pool_var = float((x_ND.double() - mean_D.double()).pow(2).sum()) / N  # per row
    opt = torch.optim.Adam(sae.parameters(), lr=train.lr, betas=(train.beta1, train.beta2))
    order_rng = np.random.default_rng(train.seed)
    drop_gen = torch.Generator().manual_seed(train.seed + 1)
    since_fired_H = torch.zeros(cfg.latents, dtype=torch.long, device=device)
    history: list[dict] = []
    step = 0
    bar = tqdm(total=total, desc="sae", disable=not progress, leave=False)
    for epoch in range(1, train.epochs + 1):
        start = time.perf_counter()
        perm = torch.from_numpy(order_rng.permutation(N))
        fired_H = torch.zeros(cfg.latents, dtype=torch.bool, device=device)
        sq_err = active = auxk_sum = 0.0
        for s in range(0, N, B):
            x_BD = x_ND[perm[s : s + B]].to(device)
            k = k_at(step, cfg.k, min(train.k_start, cfg.latents), k_warm)
            lr = lr_at(step, train.lr, lr_warm, train.lr_decay, decay_end)
            for group in opt.param_groups:
                group["lr"] = lr
            dead_H = since_fired_H > train.dead_after if train.auxk_alpha > 0 else None
            out = sae(x_BD, k, dead_H, k_aux, train.sparse, drop_gen)
            loss = out.fvu + train.auxk_alpha * out.auxk_loss
            if not torch.isfinite(loss):
                raise NonFiniteError(
                    f"SAE training diverged at step {step} (epoch {epoch}, lr={lr:.3g}): lower "
                    "--lr, keep --grad-clip > 0, or check the features for extreme values"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_gradient_parallel_to_decoder_directions()
            if train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(sae.parameters(), train.grad_clip)
            opt.step()
            sae.set_decoder_norm_to_unit_norm()

            with torch.no_grad():
                on_BK = out.top_acts > 0
                batch_fired = torch.zeros_like(fired_H)
                batch_fired[out.top_indices[on_BK]] = True
                since_fired_H += len(x_BD)
                since_fired_H[batch_fired] = 0
                fired_H |= batch_fired
                sq_err += float((x_BD - out.recon).pow(2).sum())
                active += float(on_BK.sum())
                auxk_sum += float(out.auxk_loss) * len(x_BD)
            step += 1
            bar.update()
        seconds = time.perf_counter() - start
        row = {
            "epoch": epoch,
            "step": step,
            "k": k,
            "lr": lr,
            "mse": sq_err / (N * D),
            "fvu": sq_err / (N * pool_var),
            "dead_fraction": 1 - float(fired_H.float().mean()),
            "mean_active": active / N,
            "auxk": auxk_sum / N,
            "seconds": seconds,
            "samples_per_s": N / seconds,
        }
        history.append(row)
        bar.set_postfix(fvu=f"{row['fvu']:.3f}", dead=f"{row['dead_fraction']:.3f}")
        if on_epoch is not None:
            on_epoch(row)
    bar.close()
    sae.eval()
    return sae, history


@torch.no_grad()
def evaluate(sae: SparseCoder, x_ND: np.ndarray | torch.Tensor, where: str = "x_ND") -> dict:
    """Reconstruction metrics on x_ND at the SAE's k (eval mode): mse (per element), fvu (against
    x_ND's own mean), dead_fraction (latents active on no row), mean_active (per row)."""
    x_ND = torch.from_numpy(as_matrix(x_ND, "x_ND"))
    check_width(sae, x_ND.shape[1], where)
    check_rows(x_ND, where)
    N, D = x_ND.shape
    mean_D = x_ND.mean(0, dtype=torch.float64)
    fired_H = torch.zeros(sae.cfg.latents, dtype=torch.bool)
    sq_err = sq_dev = active = 0.0
    for s in range(0, N, EVAL_BATCH):
        x_BD = x_ND[s : s + EVAL_BATCH]
        enc = sae._eval_encode(x_BD, None)
        recon = sae.decode(enc.top_acts, enc.top_indices).cpu()
        on = (enc.top_acts > 0).cpu()
        fired_H[enc.top_indices.cpu()[on]] = True
        sq_err += float((x_BD - recon).double().pow(2).sum())
        sq_dev += float((x_BD.double() - mean_D).pow(2).sum())
        active += float(on.sum())
    return {
        "mse": sq_err / (N * D),
        "fvu": sq_err / sq_dev,
        "dead_fraction": 1 - float(fired_H.float().mean()),
        "mean_active": active / N,
    }
