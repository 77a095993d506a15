"""The top-k sparse autoencoder: x -> k active latents (concepts) -> reconstruction.

    sae = SparseCoder(SaeConfig(d_in=512, expansion_factor=8, k=16))
    out = sae(x_BD)                      # ForwardOutput: recon, top acts and indices, FVU, AuxK
    codes_BH = sae.codes(x_BD)           # dense concept codes (zeros but k per row)
    sae.save("sae/"); SparseCoder.load("sae/")   # cfg.json + sae.safetensors
    SparseCoder.load_paper("sae_checkpoint.pt")  # the paper's released torch file

Encoder: pre_BH = W_enc (x - b_dec) + b_enc, keep the k largest, ReLU. Decoder: W_dec's rows are
unit vectors (one per concept), recon = sum of the k rows weighted by their activations, + b_dec.

Sparse path (the default). Only k of the H latents of a row are active, so the gradient of the
pre-activations is zero but at those k. Finding them needs one dense matmul (B x D by D x H); the
rest does not: the decoder is an embedding-bag over the k rows of W_dec (B k D multiply-adds
instead of B H D), and the encoder's backward writes only the k rows of W_enc per input row. The
dense path (`sparse=False`: a B x H code matrix through plain matmuls and autograd) computes the
same thing with about five B x H x D matmuls per step instead of one; tests check the two agree,
`benchmarks/sae_throughput.py` times them.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tttlab.atomic import atomic_path, atomic_write_text
from tttlab.checks import check_int, check_number
from tttlab.files import read_json_object
from tttlab.sae.config import SaeConfig
from tttlab.tree import from_values

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


class EncoderOutput(NamedTuple):
    """The k active latents of each row."""

    top_acts: torch.Tensor
    """B x k activations (>= 0, after ReLU)."""
    top_indices: torch.Tensor
    """B x k latent indices."""
    pre_acts: torch.Tensor
    """B x H pre-activations, without gradient (AuxK chooses its dead latents from them)."""


class ForwardOutput(NamedTuple):
    """A training step's outputs."""

    recon: torch.Tensor
    """B x D reconstruction."""
    top_acts: torch.Tensor
    """B x k activations."""
    top_indices: torch.Tensor
    """B x k latent indices."""
    fvu: torch.Tensor
    """Fraction of variance unexplained: sum of squared errors / sum of squared deviations from
    the batch mean."""
    auxk_loss: torch.Tensor
    """AuxK: the dead latents' fit of the (detached) residual, as a fraction of its variance."""


class SaeLoadError(ValueError):
    """An SAE file that cannot be loaded as it is; the message names the file and the fix."""


class _GatheredPreActs(torch.autograd.Function):
    """pre_BH's entries at idx_BK, already computed; the backward touches only those entries.

    forward(x_BD, W_HD, b_H, idx_BK, values_BK) returns values_BK (= (x W^T + b) at idx), with
    gradients to x, W and b as if they had been computed from them.
    """

    @staticmethod
    def forward(ctx, x_BD, W_HD, b_H, idx_BK, values_BK):
        ctx.save_for_backward(x_BD, W_HD, idx_BK)
        ctx.num_latents = b_H.shape[0]
        return values_BK.clone()

    @staticmethod
    def backward(ctx, g_BK):
        x_BD, W_HD, idx_BK = ctx.saved_tensors
        g_x = g_W = g_b = None
        if ctx.needs_input_grad[0]:
            g_x = F.embedding_bag(idx_BK, W_HD, per_sample_weights=g_BK, mode="sum")
        if ctx.needs_input_grad[1]:
            g_W = torch.zeros_like(W_HD)
            for j in range(idx_BK.shape[1]):  # B x D at a time: no B x k x D intermediate
                g_W.index_add_(0, idx_BK[:, j], x_BD * g_BK[:, j, None])
        if ctx.needs_input_grad[2]:
            g_b = g_BK.new_zeros(ctx.num_latents).index_add_(
                0, idx_BK.reshape(-1), g_BK.reshape(-1)
            )
        return g_x, g_W, g_b, None, None


class SparseCoder(nn.Module):
    """A top-k SAE with unit-norm decoder rows; `cfg` is saved beside the weights."""

    def __init__(self, cfg: SaeConfig, device: str | torch.device = "cpu", seed: int = 0):
        super().__init__()
        self.cfg = cfg
        H, D = cfg.latents, cfg.d_in
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(H, D, generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        # The encoder starts as the decoder's transpose (OpenAI's top-k SAE): few dead latents.
        self.W_enc = nn.Parameter(W_dec.clone().to(device))
        self.b_enc = nn.Parameter(torch.zeros(H, device=device))
        self.W_dec = nn.Parameter(W_dec.to(device))
        self.b_dec = nn.Parameter(torch.zeros(D, device=device))

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    # ---- encoding and decoding ----------------------------------------------------------------

    def _centred(self, x_BD: torch.Tensor) -> torch.Tensor:
        return x_BD - self.b_dec if self.cfg.subtract_decoder_bias else x_BD

    def pre_acts(self, x_BD: torch.Tensor) -> torch.Tensor:
        """B x H pre-activations W_enc (x - b_dec) + b_enc."""
        return torch.addmm(self.b_enc, self._centred(x_BD), self.W_enc.T)

    def encode(
        self,
        x_BD: torch.Tensor,
        k: int | None = None,
        sparse: bool = True,
        generator: torch.Generator | None = None,
    ) -> EncoderOutput:
        """The k (default cfg.k) largest pre-activations of each row, after ReLU; in training
        with cfg.dropout > 0 they are chosen after dropout (mask drawn from `generator`)."""
        k = self.cfg.k if k is None else k
        xc_BD = self._centred(x_BD)
        drop = self.training and self.cfg.dropout > 0
        if sparse:
            with torch.no_grad():
                pre_BH = torch.addmm(self.b_enc, xc_BD, self.W_enc.T)
                scale_BH = self._dropout_scale(pre_BH, generator) if drop else None
                chosen_BH = pre_BH if scale_BH is None else pre_BH * scale_BH
                idx_BK = chosen_BH.topk(k, dim=1, sorted=False).indices
            vals_BK = _GatheredPreActs.apply(
                xc_BD, self.W_enc, self.b_enc, idx_BK, pre_BH.gather(1, idx_BK)
            )
            if scale_BH is not None:
                vals_BK = vals_BK * scale_BH.gather(1, idx_BK)
        else:
            pre_BH = torch.addmm(self.b_enc, xc_BD, self.W_enc.T)
            chosen_BH = pre_BH
            if drop:
                with torch.no_grad():
                    scale_BH = self._dropout_scale(pre_BH, generator)
                chosen_BH = pre_BH * scale_BH
            vals_BK, idx_BK = chosen_BH.topk(k, dim=1, sorted=False)
            pre_BH = pre_BH.detach()
        return EncoderOutput(F.relu(vals_BK), idx_BK, pre_BH)

    def _dropout_scale(self, pre_BH: torch.Tensor, generator: torch.Generator | None):
        p = self.cfg.dropout
        keep = torch.rand(pre_BH.shape, generator=generator, device="cpu").to(pre_BH.device) >= p
        return keep.to(pre_BH.dtype) / (1 - p)

    def decode(
        self, top_acts: torch.Tensor, top_indices: torch.Tensor, sparse: bool = True
    ) -> torch.Tensor:
        """B x D reconstruction: the active decoder rows weighted by their activations, + b_dec."""
        return self._decode_rows(top_acts, top_indices, sparse) + self.b_dec

    def _decode_rows(self, acts_BK, idx_BK, sparse: bool) -> torch.Tensor:
        if sparse:
            return F.embedding_bag(idx_BK, self.W_dec, per_sample_weights=acts_BK, mode="sum")
        codes_BH = acts_BK.new_zeros(acts_BK.shape[0], self.cfg.latents).scatter(1, idx_BK, acts_BK)
        return codes_BH @ self.W_dec

    def forward(
        self,
        x_BD: torch.Tensor,
        k: int | None = None,
        dead_mask: torch.Tensor | None = None,
        k_aux: int | None = None,
        sparse: bool = True,
        generator: torch.Generator | None = None,
    ) -> ForwardOutput:
        """Encode, decode, and the losses: FVU, and AuxK when `dead_mask` (H bools) marks dead
        latents: the top k_aux (default D // 2) dead latents fit the residual x - recon."""
        enc = self.encode(x_BD, k, sparse, generator)
        recon_BD = self.decode(enc.top_acts, enc.top_indices, sparse)
        err_BD = x_BD - recon_BD
        total = (x_BD - x_BD.mean(0)).pow(2).sum()
        fvu = err_BD.pow(2).sum() / total
        auxk = fvu.new_zeros(())
        n_dead = 0 if dead_mask is None else int(dead_mask.sum())
        if n_dead:
            auxk = self._auxk_loss(x_BD, enc.pre_acts, err_BD.detach(), dead_mask, k_aux, sparse)
        return ForwardOutput(recon_BD, enc.top_acts, enc.top_indices, fvu, auxk)

    def _auxk_loss(self, x_BD, pre_BH, e_BD, dead_mask, k_aux, sparse) -> torch.Tensor:
        """||e_hat - e||^2 / ||e - mean e||^2 with e_hat = the top dead latents' decoder rows,
        without b_dec (the residual e already excludes it), scaled down when few are dead."""
        n_dead = int(dead_mask.sum())
        k_aux = k_aux or self.cfg.d_in // 2
        scale = min(n_dead / k_aux, 1.0)  # as EleutherAI's sparsify: few dead, small weight
        k_aux = min(k_aux, n_dead)
        xc_BD = self._centred(x_BD)
        with torch.no_grad():
            idx_BA = pre_BH.masked_fill(~dead_mask, -torch.inf).topk(k_aux, sorted=False).indices
        if sparse:
            vals_BA = _GatheredPreActs.apply(
                xc_BD, self.W_enc, self.b_enc, idx_BA, pre_BH.gather(1, idx_BA)
            )
        else:
            vals_BA = torch.addmm(self.b_enc, xc_BD, self.W_enc.T).gather(1, idx_BA)
        e_hat_BD = self._decode_rows(F.relu(vals_BA), idx_BA, sparse)
        var = (e_BD - e_BD.mean(0)).pow(2).sum().clamp_min(1e-12)  # a perfect fit: no NaN
        return scale * (e_hat_BD - e_BD).pow(2).sum() / var

    @torch.no_grad()
    def codes(self, x_BD: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """B x H concept codes: each row's k activations in place, zeros elsewhere (eval mode)."""
        enc = self._eval_encode(x_BD, k)
        out = enc.top_acts.new_zeros(len(x_BD), self.cfg.latents)
        return out.scatter_(1, enc.top_indices, enc.top_acts)

    @torch.no_grad()
    def reconstruct(self, x_BD: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """B x D reconstructions (eval mode)."""
        enc = self._eval_encode(x_BD, k)
        return self.decode(enc.top_acts, enc.top_indices)

    def _eval_encode(self, x_BD: torch.Tensor, k: int | None) -> EncoderOutput:
        was = self.training
        self.eval()
        try:
            return self.encode(x_BD.to(self.device, torch.float32), k)
        finally:
            self.train(was)

    # ---- the decoder's unit-norm constraint ---------------------------------------------------

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        """Rescale every decoder row to length 1 (after each optimiser step)."""
        eps = torch.finfo(self.W_dec.dtype).eps
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True) + eps

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Drop the part of each decoder row's gradient along the row (before each step): that
        part only changes the row's length, which the renormalisation undoes anyway, and it would
        feed Adam's moments with a direction that never takes effect."""
        if self.W_dec.grad is None:
            return
        parallel_H = (self.W_dec.grad * self.W_dec).sum(1, keepdim=True)
        self.W_dec.grad -= parallel_H * self.W_dec

    # ---- files ----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write cfg.json and sae.safetensors into `folder` (each atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: getattr(self, name).detach().cpu().contiguous() for name in PARAMS}
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp))
        atomic_write_text(folder / CONFIG_FILE, json.dumps(dataclasses.asdict(self.cfg), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> SparseCoder:
        """An SAE saved by `save` (a folder with cfg.json and sae.safetensors)."""
        cfg = load_config(folder)
        weights = Path(folder).expanduser() / WEIGHTS_FILE
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, RuntimeError, TypeError, ValueError) as err:
            raise SaeLoadError(f"{weights} cannot be read ({err}): re-save the SAE") from None
        return cls._from_state(cfg, state, weights, device)

    @classmethod
    def load_paper(cls, path: str | Path, device: str | torch.device = "cpu") -> SparseCoder:
        """The paper's released checkpoint: a torch file holding `config` (its sae_config.json
        keys) and `model_state_dict` with W_enc (D, H), b_enc, W_dec (H, D), b_dec; read with
        weights_only=True (no pickled objects). Its SAE encodes x without subtracting b_dec."""
        path = Path(path)
        if not path.is_file():
            raise SaeLoadError(f"no SAE checkpoint at {path}: check the path")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise SaeLoadError(
                f"{path} holds Python objects other than tensors and plain values, which tttlab "
                "does not unpickle (weights_only=True): re-save it as a dict of tensors and a "
                "config dict"
            ) from err
        except Exception as err:  # torch's readers fail on a non-checkpoint in many ways
            raise SaeLoadError(f"{path} is not a torch checkpoint ({err}): check the file") from err
        if not isinstance(obj, dict) or "model_state_dict" not in obj:
            keys = sorted(map(str, obj))[:20] if isinstance(obj, dict) else type(obj).__name__
            raise SaeLoadError(
                f"{path} is not the paper's SAE checkpoint format (it holds {keys}): expected a "
                "dict with 'config' and 'model_state_dict'; for a tttlab SAE pass its folder"
            )
        state, config = obj["model_state_dict"], obj.get("config") or {}
        if not isinstance(state, dict) or not isinstance(config, dict):
            raise SaeLoadError(
                f"{path}: 'model_state_dict' must be a dict of tensors and 'config' a dict of "
                f"settings, got {type(state).__name__} and {type(config).__name__}: re-save it"
            )
        state = dict(state)
        _check_keys(state, path)
        for name in PARAMS:
            if not isinstance(state[name], torch.Tensor) or not state[name].is_floating_point():
                raise SaeLoadError(f"{path}: {name} is not a float tensor: re-save the SAE")
        if state["W_enc"].ndim == 2:
            state["W_enc"] = state["W_enc"].T.contiguous()  # the paper stores it (D, H)
        H, D = state["W_dec"].shape if state["W_dec"].ndim == 2 else (0, 0)
        k, dropout = config.get("k", 16), config.get("dropout", 0.5)
        try:
            check_int(k, f"{path}: config k", min=1)
            check_number(dropout, f"{path}: config dropout", min=0)
            cfg = SaeConfig(
                d_in=int(D),
                expansion_factor=max(1, int(H) // max(1, int(D))),
                num_latents=int(H) if D and H % D else 0,
                k=int(k),
                subtract_decoder_bias=False,
                dropout=float(dropout),
            )
        except ValueError as err:
            raise SaeLoadError(f"{path}: its config does not describe an SAE: {err}") from None
        return cls._from_state(cfg, state, path, device)

    @classmethod
    def _from_state(cls, cfg: SaeConfig, state: dict, path: Path, device) -> SparseCoder:
        H, D = cfg.latents, cfg.d_in
        shapes = {"W_enc": (H, D), "b_enc": (H,), "W_dec": (H, D), "b_dec": (D,)}
        _check_keys(state, path)
        for name, shape in shapes.items():
            tensor = state[name]
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
                got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
                raise SaeLoadError(
                    f"{path}: {name} has shape {got} but an SAE of d_in={D}, {H} latents needs "
                    f"{shape}: the weights do not match their config; re-save them together"
                )
            if not torch.isfinite(tensor).all():
                raise SaeLoadError(f"{path}: {name} holds NaN or inf: the SAE diverged; retrain it")
        sae = cls(cfg).to(device)
        with torch.no_grad():
            for name in PARAMS:
                getattr(sae, name).copy_(state[name].float())
        return sae


def load_config(folder: str | Path) -> SaeConfig:
    """The config of an SAE saved by `SparseCoder.save`, read without its weights."""
    folder = Path(folder).expanduser()
    cfg_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file() or not weights.is_file():
        raise SaeLoadError(
            f"{folder} is not a saved SAE (it needs {CONFIG_FILE} and {WEIGHTS_FILE}): pass "
            "the folder `tttlab sae train` wrote, or a paper checkpoint (.pt) file"
        )
    try:
        values = read_json_object(cfg_path, "an SAE config", "re-save the SAE")
        return from_values(SaeConfig, values)
    except ValueError as err:
        raise SaeLoadError(f"{cfg_path} is not a valid SAE config ({err}): re-save it") from None


def _check_keys(state: dict, path: Path) -> None:
    missing = [n for n in PARAMS if n not in state]
    if missing:
        raise SaeLoadError(
            f"{path} is not a top-k SAE of this format: it lacks {', '.join(missing)} (it has "
            f"{', '.join(sorted(map(str, state)))[:200] or 'nothing'}): pass an SAE tttlab or the "
            "paper saved"
        )


def check_width(sae: SparseCoder, d: int, where: str) -> None:
    """Features of width d fit the SAE, else a message naming `where` and the fix."""
    if d != sae.cfg.d_in:
        raise ValueError(
            f"{where} has features of width d={d} but the SAE was trained on d={sae.cfg.d_in}: "
            "use features from the same encoder (and layer) as the SAE, or train an SAE on these "
            "with `tttlab sae train --features ...`"
        )
