"""The paper's theory as a simulator: sparse concepts in superposition, a global head against
test-time training on neighbours, and a bridge that places real features on the regime map."""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.theory.concepts": ["Draw", "Points", "Sim", "generate"],
        "tttlab.theory.features": ["read_sim", "write_features"],
    },
)
