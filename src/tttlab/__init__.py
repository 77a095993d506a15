"""tttlab: test-time training on frozen features.

For each test input: retrieve its nearest training neighbours in feature space, fine-tune the
head on just those neighbours, then predict (arXiv 2509.24510).
"""

__version__ = "0.1.0"
