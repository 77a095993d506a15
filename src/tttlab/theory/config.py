"""Settings of the theory simulator, plain Python (the command line builds its parsers without
numpy's heavier friends): one draw of the sparse-concept model (`Sim`) and the sweeps around it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from tttlab.checks import check_choice, check_int, check_number

RIDGE = 0.1
"""Ridge penalty in units of the mean squared norm of a fit's centred points. A fit whose data fill
a few directions (a tight neighbourhood, the global head on n >> d2 points) is shrunk by about
ridge * directions / points: a per cent or less. It keeps a near-square local fit (k close to the
directions its neighbours span) from blowing its noise up without bound."""
SWEEPS: tuple[str, ...] = ("d2", "k", "s", "tightness", "map")


Task = Literal["regression", "classification"]
TASKS: tuple[str, ...] = get_args(Task)


@dataclass(frozen=True)
class Sim:
    """One draw of the sparse-concept model: its sizes, how inputs share concepts, and the seed."""

    d1: int = 1000
    """Concepts: the width of Phi(x)."""
    s: int = 8
    """Concepts each input activates (Phi(x) is s-sparse)."""
    d2: int = 100
    """Feature width: Psi(x) = A Phi(x) has d2 < d1 entries (superposition)."""
    n_train: int = 50000
    """Training points: the global head's data and the neighbour pool."""
    n_test: int = 500
    """Test points, drawn from the same clusters."""
    sigma: float = 0.5
    """Label noise std, in units of the signal's std (the signal has variance 1)."""
    clusters: int = 250
    """Clusters the points fall into (evenly, at random). Keep it well above d2: a global head
    fits up to d2 cluster centres exactly, and the theory is about more specialities than
    features."""
    tightness: float = 1.0
    """Share of each input's s concepts drawn from its cluster's set: 0 independent inputs, 1 tight
    clusters (members share their whole support)."""
    cluster_concepts: int | None = None
    """Concepts each cluster owns, s ... d1; default s."""
    jitter: float = 0.3
    """Spread of a concept's value around its sign (+-1): how far apart a cluster's members are."""
    feature_noise: float = 0.0
    """Std of Gaussian noise added to each feature, in units of that feature's own std."""
    normalise_rows: bool = False
    """Scale A's rows to equal norm (sqrt(d1/d2)) instead of leaving them Gaussian."""
    outputs: int = 32
    """Regression: independent true heads w* drawn at once (errors are averaged over them, as the
    theory's are an expectation over w*). Classification: the classes C."""
    task: Task = "regression"
    """regression (targets f + noise) or classification (argmax over the C noisy scores)."""
    seed: int = 0
    """Seeds every random choice: clusters, supports, values, A, W*, noise."""
    allow_overparameterised: bool = False
    """Allow d2 > d1: no superposition left (the global head can then see every concept)."""

    def __post_init__(self):
        for name in ("d1", "s", "d2", "n_train", "n_test", "clusters", "outputs"):
            check_int(getattr(self, name), name, min=1)
        check_int(self.seed, "seed", min=0)
        check_choice(self.task, "task", TASKS)
        if self.s > self.d1:
            raise ValueError(
                f"s={self.s} > d1={self.d1}: an input cannot activate more concepts than exist; "
                f"choose s <= d1"
            )
        if self.d2 > self.d1 and not self.allow_overparameterised:
            raise ValueError(
                f"d2={self.d2} > d1={self.d1} is no longer underparameterised: with more features "
                "than concepts there is no superposition and the global head can see every "
                "concept, which is not the regime the theory is about. Fix: choose d2 <= d1, or "
                "pass allow_overparameterised=True (--allow-overparameterised) to run it anyway"
            )
        check_number(self.sigma, "sigma (the label noise std)", min=0)
        check_number(self.tightness, "tightness", min=0, max=1)
        check_number(self.jitter, "jitter", min=0)
        check_number(self.feature_noise, "feature_noise", min=0)
        m = self.shared
        check_int(m, "cluster_concepts", min=1)
        if not self.s <= m <= self.d1:
            raise ValueError(
                f"cluster_concepts={m} must lie in [s, d1] = [{self.s}, {self.d1}]: a cluster "
                "needs at least s concepts for its members to draw from"
            )
        if self.clusters > self.n_train:
            raise ValueError(
                f"clusters={self.clusters} > n_train={self.n_train}: some clusters would have no "
                "training point; choose clusters <= n_train"
            )
        if self.task == "classification" and self.outputs < 2:
            raise ValueError(f"classification needs outputs (classes) >= 2, got {self.outputs}")

    @property
    def shared(self) -> int:
        """Concepts each cluster owns (cluster_concepts, default s)."""
        return self.s if self.cluster_concepts is None else self.cluster_concepts

    @property
    def cluster_size(self) -> int:
        """Training points per cluster (the smallest cluster's count): a neighbourhood larger
        than this must reach into other clusters."""
        return self.n_train // self.clusters


@dataclass
class SimulateConfig:
    """What `tttlab simulate` sweeps around the base draw, and where the results go."""

    sweeps: tuple[str, ...] = SWEEPS
    """Sweeps to run: d2, k, s, tightness, map."""
    k: int = 64
    """TTT's neighbours in every sweep but k."""
    ridge: float = RIDGE
    """Ridge penalty of every fit, in units of the mean squared norm of its centred points."""
    ratios: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
    """d2 sweep: values of d2/d1."""
    samples_per_feature: int = 50
    """d2 sweep: n_train is at least this many times d2 (the global head needs n >> d2)."""
    ks: tuple[int, ...] = (8, 16, 32, 64, 128, 200, 400)
    """k sweep: neighbours per test point."""
    ss: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
    """s sweep: active concepts per input."""
    tightnesses: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    """tightness sweep: share of an input's concepts drawn from its cluster's set."""
    map_ratios: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5)
    """map: values of d2/d1 (columns)."""
    map_ss: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    """map: values of s (rows)."""
    seeds: tuple[int, ...] = (0,)
    """One unit per setting and seed."""

    def __post_init__(self):
        lists = ("sweeps", "ratios", "ks", "ss", "tightnesses", "map_ratios", "map_ss", "seeds")
        for name in lists:
            values = tuple(getattr(self, name))
            setattr(self, name, values)
            if not values:
                raise ValueError(f"{name} is empty: give at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"{name}={list(values)} repeats a value")
        for sweep in self.sweeps:
            check_choice(sweep, "sweeps", SWEEPS)
        check_int(self.k, "k", min=1)
        check_number(self.ridge, "ridge", min=0, strict_min=True)
        check_int(self.samples_per_feature, "samples_per_feature", min=1)
        for r in (*self.ratios, *self.map_ratios):
            check_number(r, "ratios (d2/d1)", min=0, strict_min=True)
        for k in self.ks:
            check_int(k, "ks", min=1)
        for s in (*self.ss, *self.map_ss):
            check_int(s, "ss", min=1)
        for t in self.tightnesses:
            check_number(t, "tightnesses", min=0, max=1)
        for seed in self.seeds:
            check_int(seed, "seeds", min=0)


@dataclass
class BridgeConfig:
    """`tttlab simulate --bridge`: real features placed on the simulated regime map."""

    bridge: str | None = None
    """A feature file or folder (as --features) to measure and place on the map."""
    bridge_k: int = 50
    """Neighbours per point when measuring the features."""
    bridge_run: str | None = None
    """A tttlab run folder on the same features, for TTT's measured gain."""

    def __post_init__(self):
        check_int(self.bridge_k, "bridge_k", min=1)
