"""The paper's theory as a simulator: sparse concepts in superposition, a global head against
test-time training on neighbours, and a bridge that places real features on the regime map."""

from tttlab.theory.generate import Draw, Points, Sim, generate

__all__ = ["Draw", "Points", "Sim", "generate"]
