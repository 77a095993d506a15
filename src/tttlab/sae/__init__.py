"""The sparse-autoencoder concept study: a top-k SAE, its trainer and the paper's three analyses.

sae, history = train_sae(X_ND, SaeConfig(d_in=X_ND.shape[1]), SaeTrainConfig(epochs=10))
"""

from tttlab.sae.config import PAPER_DEFECTS, SaeConfig, SaeTrainConfig, paper_configs
from tttlab.sae.model import EncoderOutput, ForwardOutput, SaeLoadError, SparseCoder

__all__ = [
    "PAPER_DEFECTS",
    "EncoderOutput",
    "ForwardOutput",
    "SaeConfig",
    "SaeLoadError",
    "SaeTrainConfig",
    "SparseCoder",
    "paper_configs",
]
