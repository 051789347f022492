"""The vectorised bootstrap of blowup_verdict equals its one-resample-at-a-time reference
(same random draws), on families with blow-ups (inf), curves that never or always cross,
and unequal repeats (which take the loop)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnmem.numerics import perturbation as P


def _family(seed, n_inf, k, spread, unequal=False):
    rng = np.random.default_rng(seed)
    betas = 1e-3 * 2 ** (np.arange(21) / 2)
    curves = {}
    for j, m in enumerate((8, 16, 32, 64)):
        kk = k + (j if unequal else 0)
        s = np.exp(rng.normal(size=(kk, 21)) * spread) * (betas[None, :] * m) ** 2 + 1e-3
        if n_inf:
            s[:, 21 - n_inf:] = np.inf
        curves[m] = P.PerturbationCurve.from_samples(betas, s.T, 1e-3 * (j + 1),
                                                     {"target_scale": 1.0})
    return P._curves(curves), np.log(np.array([8, 16, 32, 64.0]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n_inf=st.integers(0, 5), k=st.integers(2, 12),
       spread=st.floats(0.0, 3.0), level=st.sampled_from([1e-4, 1e-3, 1e-2, 0.3, 5.0, 1e9]),
       unequal=st.booleans())
def test_fast_bootstrap_equals_the_loop(seed, n_inf, k, spread, level, unequal):
    items, x = _family(seed, n_inf, k, spread, unequal)
    fast = P._bootstrap_ci(items, x, level, 0.05, 200, seed % 97)
    ref = P._bootstrap_ci_loop(items, x, level, 0.05, 200, seed % 97)
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)


def test_blowup_verdict_uses_the_fast_path_and_agrees():
    items, x = _family(1, 2, 30, 1.5)
    curves = dict(items)
    v = P.blowup_verdict(curves, level_factor=1.0, seed=4, n_boot=500)
    ref = P._bootstrap_ci_loop(items, x, v.level, 0.05, 500, 4)
    np.testing.assert_allclose(v.bootstrap_ci, ref, rtol=1e-12, atol=1e-12)
