"""The top-k SAE: its shapes, its constraint, the sparse path against the dense one, and files."""

import numpy as np
import pytest
import torch

from tttlab.sae import SaeConfig, SaeLoadError, SparseCoder
from tttlab.sae.model import check_width


def model_and_batch(subtract=True, dropout=0.0, seed=0):
    cfg = SaeConfig(d_in=12, expansion_factor=4, k=5, subtract_decoder_bias=subtract,
                    dropout=dropout)  # fmt: skip
    sae = SparseCoder(cfg, seed=seed)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.b_dec.normal_(generator=g)
        sae.b_enc.uniform_(-0.1, 0.1, generator=g)
    return sae, torch.randn(40, 12, generator=g)


def test_encode_keeps_k_latents_and_decodes_to_the_input_width():
    sae, x = model_and_batch()
    enc = sae.encode(x)
    assert enc.top_acts.shape == enc.top_indices.shape == (40, 5)
    assert (enc.top_acts >= 0).all()
    assert sae.decode(enc.top_acts, enc.top_indices).shape == x.shape
    codes = sae.codes(x)
    assert codes.shape == (40, 48) and ((codes > 0).sum(1) <= 5).all()
    torch.testing.assert_close(codes @ sae.W_dec + sae.b_dec, sae.reconstruct(x))


@pytest.mark.parametrize("subtract", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_the_sparse_path_gives_the_dense_paths_losses_and_gradients(subtract, dropout):
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True
    results = []
    for sparse in (True, False):
        sae, x = model_and_batch(subtract, dropout)
        sae.train()
        out = sae(x, dead_mask=dead, k_aux=6, sparse=sparse,
                  generator=torch.Generator().manual_seed(7))  # fmt: skip
        (out.fvu + out.auxk_loss).backward()
        results.append([out.fvu, out.auxk_loss] + [p.grad for p in sae.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_encoder_subtracts_b_dec_unless_told_not_to():
    sae, x = model_and_batch(subtract=True)
    torch.testing.assert_close(sae.pre_acts(x), (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc)
    paper, _ = model_and_batch(subtract=False)
    torch.testing.assert_close(paper.pre_acts(x), x @ paper.W_enc.T + paper.b_enc)


def test_auxk_fits_the_residual_with_dead_latents_and_counts_b_dec_once():
    sae, x = model_and_batch()
    dead = torch.zeros(48, dtype=torch.bool)
    dead[:10] = True
    out = sae(x, dead_mask=dead, k_aux=4)
    # by hand: the top-4 dead pre-activations decode (no b_dec) against the detached residual
    e = (x - out.recon).detach()
    pre = sae.pre_acts(x).detach()
    idx = pre.masked_fill(~dead, -torch.inf).topk(4).indices
    acts = torch.relu(pre.gather(1, idx))
    e_hat = torch.einsum("bk,bkd->bd", acts, sae.W_dec.detach()[idx])
    expected = ((e_hat - e) ** 2).sum() / ((e - e.mean(0)) ** 2).sum()
    torch.testing.assert_close(out.auxk_loss.detach(), expected)
    assert sae(x).auxk_loss == 0  # no dead latents, no AuxK


def test_decoder_rows_stay_unit_norm_and_lose_their_parallel_gradient():
    sae, x = model_and_batch()
    sae(x).fvu.backward()
    sae.remove_gradient_parallel_to_decoder_directions()
    along = (sae.W_dec.grad * sae.W_dec).sum(1)
    assert along.abs().max() < 1e-6
    with torch.no_grad():
        sae.W_dec.mul_(3)
    sae.set_decoder_norm_to_unit_norm()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(48))


def test_save_and_load_round_trip(tmp_path):
    sae, x = model_and_batch(subtract=False, dropout=0.5)
    sae.save(tmp_path / "sae")
    assert {p.name for p in (tmp_path / "sae").iterdir()} == {"cfg.json", "sae.safetensors"}
    back = SparseCoder.load(tmp_path / "sae")
    assert back.cfg == sae.cfg
    torch.testing.assert_close(back.codes(x), sae.codes(x))


def test_the_papers_checkpoint_format_loads(tmp_path):
    """A torch file like the paper's: config + model_state_dict with W_enc stored (d, h)."""
    sae, x = model_and_batch(subtract=False)
    state = {"W_enc": sae.W_enc.detach().T.clone(), "b_enc": sae.b_enc.detach().clone(),
             "W_dec": sae.W_dec.detach().clone(), "b_dec": sae.b_dec.detach().clone()}  # fmt: skip
    config = {"feature_dim": 12, "expansion_factor": 4, "k": 5, "learning_rate": 0.001}
    torch.save({"config": config, "model_state_dict": state}, tmp_path / "sae.pt")
    paper = SparseCoder.load_paper(tmp_path / "sae.pt")
    assert paper.cfg.latents == 48 and paper.cfg.k == 5
    assert not paper.cfg.subtract_decoder_bias  # the paper encodes x, not x - b_dec
    torch.testing.assert_close(paper.codes(x), sae.codes(x))


class Pickled:
    """Not a tensor: what a pickled checkpoint may carry and tttlab refuses to unpickle."""


def test_bad_checkpoints_are_refused_naming_the_file(tmp_path):
    torch.save({"config": {}, "model_state_dict": {"W_dec": torch.zeros(8, 4)}}, tmp_path / "a.pt")
    with pytest.raises(SaeLoadError, match=r"a\.pt.*lacks W_enc, b_enc, b_dec"):
        SparseCoder.load_paper(tmp_path / "a.pt")
    torch.save({"config": {}, "model_state_dict": {}, "extra": Pickled()}, tmp_path / "b.pt")
    with pytest.raises(SaeLoadError, match=r"b\.pt holds Python objects"):
        SparseCoder.load_paper(tmp_path / "b.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "c.pt")
    with pytest.raises(SaeLoadError, match="not the paper's SAE checkpoint format"):
        SparseCoder.load_paper(tmp_path / "c.pt")
    with pytest.raises(SaeLoadError, match="is not a saved SAE"):
        SparseCoder.load(tmp_path)


def test_k_larger_than_the_latents_and_a_width_mismatch_are_named():
    with pytest.raises(ValueError, match=r"k=99 is larger than the SAE's 48 latents"):
        SaeConfig(d_in=12, expansion_factor=4, k=99)
    sae, _ = model_and_batch()
    with pytest.raises(ValueError, match=r"test\.npz has features of width d=7 .* d=12"):
        check_width(sae, 7, "test.npz")


def test_configs_name_bad_values():
    with pytest.raises(ValueError, match="dropout"):
        SaeConfig(dropout=1.0)
    from tttlab.sae import SaeTrainConfig

    with pytest.raises(ValueError, match="batch_size"):
        SaeTrainConfig(batch_size=0)
    assert np.isclose(SaeTrainConfig().auxk_alpha, 1 / 32)
