"""The sparse autoencoder's settings: its shape (`SaeConfig`, saved beside its weights as cfg.json),
its training (`SaeTrainConfig`) and the concept analyses (`AnalyseConfig`), each field declared
once with its default and its check.

    cfg, train = paper_configs(d_in=512)   # the paper's recipe (expansion 8, k = 16, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from tttlab.checks import check_choice, check_int, check_number
from tttlab.presets import sae_config
from tttlab.ttt.config import TTTConfig

Device = Literal["cpu", "cuda"]


@dataclass
class SaeConfig:
    """A top-k sparse autoencoder: D inputs -> H latents, k of them active per row."""

    d_in: int = 512
    """D, the width of the features it encodes (`tttlab sae train` takes it from the file)."""
    expansion_factor: int = 8
    """H = expansion_factor * D latents (concepts), unless num_latents is set."""
    num_latents: int = 0
    """H, when it is not a multiple of D; 0: expansion_factor * d_in."""
    k: int = 16
    """Latents kept per row (the k largest pre-activations)."""
    subtract_decoder_bias: bool = True
    """Encode x - b_dec (the standard recipe); the paper's own SAE encodes x itself (False)."""
    dropout: float = 0.0
    """Dropout on the pre-activations in training; the paper's SAE used 0.5, the recipe 0."""

    def __post_init__(self):
        check_int(self.d_in, "d_in", min=1)
        check_int(self.expansion_factor, "expansion_factor", min=1)
        check_int(self.num_latents, "num_latents", min=0)
        check_int(self.k, "k", min=1)
        check_number(self.dropout, "dropout", min=0)
        if self.dropout >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.k > self.latents:
            raise ValueError(
                f"k={self.k} is larger than the SAE's {self.latents} latents (d_in={self.d_in} x "
                f"expansion_factor={self.expansion_factor}): choose k <= {self.latents}, or more "
                "latents"
            )

    @property
    def latents(self) -> int:
        """H, the number of latents."""
        return self.num_latents or self.expansion_factor * self.d_in


@dataclass
class SaeTrainConfig:
    """How an SAE is trained: Adam with warm-up and cosine decay, a k warm-up, AuxK."""

    epochs: int = 100
    """Passes over the training rows (each in a new seeded order)."""
    batch_size: int = 4096
    """Rows per Adam step."""
    lr: float = 1e-3
    """Peak Adam learning rate."""
    beta1: float = 0.9
    """Adam's first-moment decay."""
    beta2: float = 0.999
    """Adam's second-moment decay."""
    lr_warmup_steps: int = 5000
    """Steps of linear learning-rate warm-up from 0 (capped at a tenth of the run)."""
    lr_decay: bool = True
    """Cosine decay of the learning rate to 0 after the warm-up; False: constant."""
    total_steps: int = 0
    """Step at which the cosine decay reaches 0; 0: the run's own number of steps."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 turns clipping off."""
    k_start: int = 128
    """k at step 0, lowered linearly to the SAE's k over k_warmup_steps; 0: no warm-up."""
    k_warmup_steps: int = 10000
    """Steps of the k warm-up (capped at half the run, so short runs end at the real k)."""
    auxk_alpha: float = 1 / 32
    """Weight of the AuxK dead-latent loss (OpenAI's top-k SAE recipe); 0 turns it off."""
    k_aux: int = 0
    """Dead latents that fit the residual in AuxK; 0: d_in // 2."""
    dead_after: int = 100_000
    """Training rows without firing after which a latent counts as dead for AuxK."""
    sparse: bool = True
    """Decode and back-propagate through the k active latents only (False: dense matmuls, for
    comparison; the two give the same weights up to rounding)."""
    seed: int = 0
    """Seeds the initialisation, the row order and dropout."""
    device: Device = "cpu"
    """cpu or cuda."""

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            check_int(getattr(self, name), name, min=1)
        for name in ("lr_warmup_steps", "total_steps", "k_start", "k_warmup_steps", "k_aux"):
            check_int(getattr(self, name), name, min=0)
        check_int(self.dead_after, "dead_after", min=1)
        check_int(self.seed, "seed", min=0)
        check_number(self.lr, "lr", min=0, strict_min=True)
        check_number(self.grad_clip, "grad_clip", min=0)
        check_number(self.auxk_alpha, "auxk_alpha", min=0)
        for name in ("beta1", "beta2"):
            check_number(getattr(self, name), name, min=0)
            if getattr(self, name) >= 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        check_choice(self.device, "device", get_args(Device))


@dataclass
class AnalyseConfig:
    """Settings of the three analyses."""

    points: int = 1000
    """Test points analysed (a seeded sample of the test set; all if it has fewer)."""
    k: int = 50
    """Neighbourhood size, for the concept counts and every TTT."""
    ttt_epochs: int = 50
    """Full-batch Adam steps of every TTT (features, reconstructions, concept space)."""
    ttt_lr: float = 0.01
    """Adam learning rate of every TTT head."""
    mask_lr: float = 0.05
    """Adam learning rate of the learned mask's logits."""
    mask_penalty: float = 0.01
    """Sparsity penalty per kept concept, added to the neighbourhood's mean cross-entropy."""
    mask_init: float = 1.0
    """Initial mask logit (> 0: every concept starts kept)."""
    mask_penalties: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    """If not empty, mask_penalty is chosen among these on (up to `points`) validation rows, never
    test points: the largest whose masked TTT is within mask_tolerance of all-concepts TTT there."""
    mask_tolerance: float = 0.005
    """Accuracy (a fraction) the chosen mask penalty may lose on the validation rows."""
    head_epochs: int = 20
    """Epochs of the global linear heads (on features, reconstructions, codes)."""
    head_lr: float = 1e-3
    """Adam learning rate of the global heads."""
    head_batch: int = 256
    """Minibatch of the global heads."""
    val_per_class: int = 10
    """Rows per class carved out of the pool to pick the global heads' best epoch."""
    top: int = 10
    """Top probabilities compared in the implicit-selection analysis."""
    chunk: int = 64
    """Test points fine-tuned together in concept space (memory only)."""
    n_boot: int = 1000
    """Bootstrap resamples for the accuracy intervals."""
    seed: int = 0
    """Seeds the test sample, the random sets, the carve-out and the heads."""

    def __post_init__(self):
        for name in ("points", "k", "head_epochs", "head_batch", "val_per_class", "top"):
            check_int(getattr(self, name), name, min=1)
        for name in ("ttt_epochs", "seed"):
            check_int(getattr(self, name), name, min=0)
        check_int(self.chunk, "chunk", min=1)
        check_int(self.n_boot, "n_boot", min=1)
        for name in ("ttt_lr", "mask_lr", "head_lr"):
            check_number(getattr(self, name), name, min=0, strict_min=True)
        check_number(self.mask_penalty, "mask_penalty", min=0)
        check_number(self.mask_tolerance, "mask_tolerance", min=0)
        self.mask_penalties = tuple(self.mask_penalties)
        for i, value in enumerate(self.mask_penalties):
            check_number(value, f"mask_penalties[{i}]", min=0)
        check_number(self.mask_init, "mask_init")

    def ttt(self) -> TTTConfig:
        """The engine's settings for TTT on features and reconstructions."""
        return TTTConfig(k=self.k, epochs=self.ttt_epochs, lr=self.ttt_lr)


PAPER_DEFECTS = (
    "The paper's dead-latent (ghost) loss adds the decoder bias b_dec to the dead latents' "
    "reconstruction of a residual that already excludes it (b_dec counted twice), with a weight of "
    "1e6; tttlab's AuxK counts b_dec once, detaches the residual target and weighs it auxk_alpha."
)
"""What tttlab does not copy from the paper's SAE, and why."""


def paper_configs(
    d_in: int | None = None, preset: str = "paper"
) -> tuple[SaeConfig, SaeTrainConfig]:
    """The paper's SAE recipe (`tttlab.presets.sae_config()`) as tttlab configs.

    d_in: the feature width (default: the preset's 512); the two departures of the paper's own
    SAE are kept (no b_dec subtraction on encode, dropout 0.5); its ghost-loss weight is not
    (see PAPER_DEFECTS).
    """
    p = sae_config(preset)
    sae = SaeConfig(
        d_in=d_in or p["feature_dim"],
        expansion_factor=p["expansion_factor"],
        k=p["k"],
        subtract_decoder_bias=False,
        dropout=0.5,
    )
    train = SaeTrainConfig(
        epochs=p["epochs"],
        batch_size=p["batch_size"],
        lr=p["learning_rate"],
        beta1=p["beta1"],
        beta2=p["beta2"],
        lr_warmup_steps=p["warmup_steps"] if p["use_lr_schedule"] else 0,
        lr_decay=p["use_lr_schedule"],
        total_steps=p["total_steps"],
        grad_clip=p["grad_clip"],
        k_start=p["k_warmup_start"] if p["use_k_warmup"] else 0,
        k_warmup_steps=p["k_warmup_steps"],
    )
    return sae, train


@dataclass
class SaeRunConfig:
    """Which feature file an SAE command reads, and where its run folder goes."""

    features: str = ""
    """Feature file or folder of chunks (embeddings + labels)."""
    normalize: bool = False
    """Unit-normalise every row first (the paper's CLIP features are unit-norm)."""
    out: str = "runs"
    """Folder that receives the run folder."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        if not self.features:
            raise ValueError(
                "features is required: pass --features PATH (a feature file or folder)"
            )


@dataclass
class SaeAnalyseInput:
    """`tttlab sae analyse`: the SAE analysed and the test rows."""

    sae: str = ""
    """An SAE folder (tttlab sae train) or the paper's .pt checkpoint."""
    test_features: str | None = None
    """Test file; default: carve test_per_class rows per class out of --features."""
    test_per_class: int = 50
    """Rows per class carved out as the test set when no --test-features is given."""

    def __post_init__(self):
        if not self.sae:
            raise ValueError("sae is required: pass --sae PATH (an SAE folder or .pt checkpoint)")
        check_int(self.test_per_class, "test_per_class", min=1)
