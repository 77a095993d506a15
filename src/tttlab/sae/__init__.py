"""The sparse-autoencoder concept study: a top-k SAE, its trainer and the paper's three analyses.

sae, history = train_sae(X_ND, SaeConfig(d_in=X_ND.shape[1]), SaeTrainConfig(epochs=10))
"""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.sae.analyses": ["AnalysisResult", "analyse"],
        "tttlab.sae.config": [
            "PAPER_DEFECTS",
            "AnalyseConfig",
            "SaeConfig",
            "SaeTrainConfig",
            "paper_configs",
        ],
        "tttlab.sae.model": ["EncoderOutput", "ForwardOutput", "SaeLoadError", "SparseCoder"],
        "tttlab.sae.runs": ["analyse_run", "load_sae", "train_run"],
    },
)
