"""Exhaustive template-matching baselines: NCC, MTM (Hel-Or et al.), BBS (Dekel et al.)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from regionsearch.baselines import (
    BASELINES,
    MatchResult,
    match_bbs,
    match_mtm,
    match_ncc,
    resize_template,
)
from regionsearch.evaluate import box_iou


def _paste(rng, ref_hw, template, colour=False):
    """Random-noise reference with ``template`` pasted at a random position; returns ref, box."""
    H, W = ref_hw
    th, tw = template.shape[:2]
    shape = (H, W, 3) if colour else (H, W)
    ref = rng.random(shape).astype(np.float32)
    r = int(rng.integers(0, H - th + 1))
    c = int(rng.integers(0, W - tw + 1))
    ref[r : r + th, c : c + tw] = template
    return ref, np.array([c, r, c + tw, r + th], dtype=np.float64)


def _iou(result: MatchResult, box) -> float:
    return float(box_iou(result.box, box))


# ------------------------------------------------------------------ exact copies


@pytest.mark.parametrize("name", ["ncc", "mtm", "bbs"])
@pytest.mark.parametrize("colour", [False, True])
def test_finds_exact_copy(name, colour):
    rng = np.random.default_rng(1 + colour)
    for _ in range(3):
        shape = (15, 12, 3) if colour else (15, 12)
        template = rng.random(shape).astype(np.float32)
        ref, box = _paste(rng, (40, 50), template, colour)
        res = BASELINES[name](template, ref)
        assert isinstance(res, MatchResult)
        assert res.box.shape == (4,) and res.box.dtype == np.float64
        assert _iou(res, box) == 1.0, (name, res.box, box)
        assert np.isfinite(res.score)
    if name in ("ncc", "bbs"):
        assert res.score == pytest.approx(1.0, abs=1e-5)
    else:  # PWC quantisation residual only: within-bin variance / total variance
        assert -0.05 < res.score <= 0.0


@pytest.mark.parametrize("name", ["ncc", "mtm", "bbs"])
def test_uint8_inputs_match_float_inputs(name):
    rng = np.random.default_rng(3)
    template = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    ref = rng.integers(0, 256, (30, 35), dtype=np.uint8)
    ref[7:19, 20:32] = template
    res_u8 = BASELINES[name](template, ref)
    res_f = BASELINES[name](template.astype(np.float32) / 255, ref.astype(np.float32) / 255)
    np.testing.assert_array_equal(res_u8.box, [20, 7, 32, 19])
    np.testing.assert_array_equal(res_u8.box, res_f.box)
    assert res_u8.score == pytest.approx(res_f.score, abs=1e-5)


# ------------------------------------------------------------------ tone mapping


def test_mtm_invariant_to_monotonic_tone_map():
    rng = np.random.default_rng(4)
    template = rng.random((16, 16)).astype(np.float32)
    ref, box = _paste(rng, (48, 48), template)
    mapped = (ref**2 * 0.5 + 0.1).astype(np.float32)  # non-linear, monotonic on [0, 1]

    res = match_mtm(template, mapped)
    assert _iou(res, box) == 1.0
    # The true window is still explained almost perfectly by a PWC tone map ...
    c, r = int(box[0]), int(box[1])
    window = mapped[r : r + 16, c : c + 16]
    assert match_mtm(template, window).score > -0.05
    # ... whereas its linear correlation is no longer perfect.
    assert match_ncc(template, window).score < 0.99


# ------------------------------------------------------------------ window counts


def test_window_counts():
    rng = np.random.default_rng(5)
    template = rng.random((10, 10)).astype(np.float32)
    ref = rng.random((30, 20)).astype(np.float32)  # H x W
    expected = (30 - 10 + 1) * (20 - 10 + 1)
    assert match_ncc(template, ref).windows == expected
    assert match_mtm(template, ref).windows == expected
    assert match_bbs(template, ref).windows == expected
    assert match_bbs(template, ref, stride=3).windows == len(range(0, 21, 3)) * len(range(0, 11, 3))
    # Every fitting scale counts; scales that do not fit are skipped, not counted.
    two = match_ncc(template, ref, scales=(1.0, 0.5, 3.0))
    assert two.windows == expected + (30 - 5 + 1) * (20 - 5 + 1)


# ------------------------------------------------------------------ scales


def test_resize_template():
    q = np.random.default_rng(6).random((20, 10, 3)).astype(np.float32)
    assert resize_template(q, 0.5).shape == (10, 5, 3)
    assert resize_template(q, 2.0).shape == (40, 20, 3)
    assert resize_template(q, 0.01).shape == (3, 3, 3)  # min side 3
    np.testing.assert_array_equal(resize_template(q, 1.0), q)
    with pytest.raises(ValueError):
        resize_template(q, 0.0)


@pytest.mark.parametrize("name", ["ncc", "mtm", "bbs"])
def test_multiscale_finds_downscaled_query(name):
    rng = np.random.default_rng(7)
    # A smooth pattern survives the 2x down/up-sampling round trip.
    pattern = cv2.GaussianBlur(rng.random((24, 24)).astype(np.float32), (0, 0), 2.0)
    pattern = (pattern - pattern.min()) / (pattern.max() - pattern.min())
    ref, box = _paste(rng, (60, 60), pattern)
    query = resize_template(pattern, 0.5)  # 12 x 12
    assert query.shape == (12, 12)
    res = BASELINES[name](query, ref, scales=(1.0, 2.0))
    assert res.scale == 2.0
    assert res.box[2] - res.box[0] == 24 and res.box[3] - res.box[1] == 24
    assert _iou(res, box) > (0.9 if name == "bbs" else 0.99), (res.box, box)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("name", ["ncc", "mtm", "bbs"])
def test_template_larger_than_reference_raises(name):
    template = np.zeros((40, 10), dtype=np.float32)
    ref = np.zeros((30, 30), dtype=np.float32)
    with pytest.raises(ValueError, match="larger than the reference"):
        BASELINES[name](template, ref)
    # ... also when only the scaled template is too large; fitting scales still run.
    small = np.random.default_rng(0).random((10, 10)).astype(np.float32)
    with pytest.raises(ValueError, match="larger than the reference"):
        BASELINES[name](small, ref, scales=(4.0,))
    assert BASELINES[name](small, ref, scales=(4.0, 1.0)).scale == 1.0


@pytest.mark.parametrize("name", ["ncc", "mtm", "bbs"])
def test_bad_shapes_raise(name):
    fn = BASELINES[name]
    with pytest.raises(ValueError, match="shape"):
        fn(np.zeros((5, 5, 4), np.float32), np.zeros((20, 20), np.float32))
    with pytest.raises(ValueError, match="shape"):
        fn(np.zeros((5, 5), np.float32), np.zeros((1, 20, 20, 3), np.float32))
    with pytest.raises(ValueError):
        fn(np.zeros((5, 5), np.float32), np.zeros((20, 20), np.float32), scales=())


def test_flat_windows_do_not_produce_nan():
    rng = np.random.default_rng(8)
    template = rng.random((8, 8)).astype(np.float32)
    ref = np.full((30, 30), 0.5, dtype=np.float32)  # mostly constant: zero-variance windows
    ref[20:28, 3:11] = template
    for name in ("ncc", "mtm", "bbs"):
        res = BASELINES[name](template, ref)
        assert not np.isnan(res.score)
        np.testing.assert_array_equal(res.box, [3, 20, 11, 28])
    flat = np.full((20, 20), 0.3, dtype=np.float32)
    assert not np.isnan(match_ncc(template, flat).score)
    assert match_mtm(template, flat).score == -np.inf  # every window is flat


# ------------------------------------------------------------------ naive references


def _naive_mtm_distance(template, window, bins):
    """Fit the best piecewise-constant tone map per bin by least squares, by hand."""
    p = template.astype(np.float64).ravel()
    w = window.astype(np.float64).ravel()
    lo, hi = p.min(), p.max()
    edges = np.linspace(lo, hi, bins + 1)
    residual = 0.0
    for j in range(bins):
        last = j == bins - 1
        in_bin = (p >= edges[j]) & ((p <= edges[j + 1]) if last else (p < edges[j + 1]))
        if in_bin.any():
            beta = w[in_bin].mean()  # least-squares constant for this slice
            residual += ((w[in_bin] - beta) ** 2).sum()
    return residual / (w.size * w.var())


@pytest.mark.parametrize("bins", [1, 3, 8])
def test_mtm_matches_naive(bins):
    rng = np.random.default_rng(9 + bins)
    template = rng.random((5, 7)).astype(np.float32)
    ref = rng.random((11, 13)).astype(np.float32)
    th, tw = template.shape
    naive = np.empty((11 - th + 1, 13 - tw + 1))
    for r in range(naive.shape[0]):
        for c in range(naive.shape[1]):
            window = ref[r : r + th, c : c + tw]
            naive[r, c] = _naive_mtm_distance(template, window, bins)
            # One-window reference: the score of exactly that window.
            got = -match_mtm(template, window, bins=bins).score
            assert np.allclose(got, naive[r, c], rtol=1e-4, atol=1e-5), (r, c)
    res = match_mtm(template, ref, bins=bins)
    assert np.allclose(-res.score, naive.min(), rtol=1e-4, atol=1e-5)
    if bins > 1:  # with one bin D == 1 everywhere: the argmin is a float-noise tie
        r, c = np.unravel_index(np.argmin(naive), naive.shape)
        np.testing.assert_array_equal(res.box, [c, r, c + tw, r + th])


def _naive_bbs(template, window, pz, gamma):
    """Best-buddy count with explicit loops: Gaussian-weighted pixels + scaled xy."""
    ax = np.arange(pz) - (pz - 1) / 2
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 0.6**2))
    g /= g.sum()
    if template.ndim == 2:
        template, window = template[..., None], window[..., None]
    ny, nx = template.shape[0] // pz, template.shape[1] // pz
    cells = [(i * pz, j * pz) for i in range(ny) for j in range(nx)]
    n = len(cells)
    D = np.zeros((n, n))
    for a, (ya, xa) in enumerate(cells):  # template patch
        tp = template[ya : ya + pz, xa : xa + pz].astype(np.float64)
        for b, (yb, xb) in enumerate(cells):  # window patch
            wp = window[yb : yb + pz, xb : xb + pz].astype(np.float64)
            app = float((((tp - wp) * g[..., None]) ** 2).sum())
            xy = ((ya - yb) * 0.0039) ** 2 + ((xa - xb) * 0.0039) ** 2
            D[a, b] = app + gamma * xy
    count = 0
    for a in range(n):
        b = int(np.argmin(D[a, :]))
        if int(np.argmin(D[:, b])) == a:
            count += 1
    return count / n


@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("pz,gamma,stride", [(3, 2.0, 1), (2, 0.5, 2)])
def test_bbs_matches_naive(colour, pz, gamma, stride):
    rng = np.random.default_rng(20 + colour + pz)
    shape_t = (7, 9, 3) if colour else (7, 9)  # not multiples of 3: remainder rows/cols unused
    template = rng.random(shape_t).astype(np.float32)
    ref = rng.random((14, 15, 3) if colour else (14, 15)).astype(np.float32)
    # Plant a noisy copy so that the scores are spread out.
    ref[4:11, 5:14] = np.clip(template + 0.15 * rng.standard_normal(shape_t), 0, 1)
    th, tw = template.shape[:2]
    rows, cols = range(0, 14 - th + 1, stride), range(0, 15 - tw + 1, stride)
    naive = np.array(
        [[_naive_bbs(template, ref[r : r + th, c : c + tw], pz, gamma) for c in cols] for r in rows]
    )
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            got = match_bbs(template, ref[r : r + th, c : c + tw], patch_size=pz, gamma=gamma)
            assert got.score == pytest.approx(naive[i, j]), (r, c)
    res = match_bbs(template, ref, patch_size=pz, gamma=gamma, stride=stride)
    i, j = np.unravel_index(np.argmax(naive), naive.shape)
    np.testing.assert_array_equal(res.box, [cols[j], rows[i], cols[j] + tw, rows[i] + th])
    assert res.score == pytest.approx(naive.max())
    assert res.windows == naive.size


def test_bbs_rejects_bad_parameters():
    q = np.zeros((6, 6), np.float32)
    ref = np.zeros((20, 20), np.float32)
    with pytest.raises(ValueError):
        match_bbs(q, ref, patch_size=0)
    with pytest.raises(ValueError):
        match_bbs(q, ref, stride=0)
    with pytest.raises(ValueError):
        match_bbs(q, ref, gamma=-1.0)
    with pytest.raises(ValueError):
        match_bbs(q, ref, patch_size=7)  # template smaller than one patch
    with pytest.raises(ValueError):
        match_mtm(q, ref, bins=0)


def test_other_integer_dtypes_raise():
    with pytest.raises(ValueError, match="uint8"):
        match_ncc(np.zeros((5, 5), np.int64), np.zeros((20, 20), np.float32))


def test_ncc_is_precise_on_flat_canvases():
    """OpenCV's float32 NCC must agree with scikit-image's float64 one on black MNIST canvases
    (uncentred float32 input disagreed on 7 of these 100 pairs)."""
    from regionsearch.baselines import match_ncc_skimage
    from regionsearch.data.canvases import generate_pairs
    from regionsearch.data.mnist import load_mnist

    images, labels = load_mnist("test", None)
    pairs = generate_pairs(images[9000:], labels[9000:], 100, "translated", 5)
    for query, reference in zip(pairs["queries"], pairs["references"]):
        opencv, skimage = match_ncc(query, reference), match_ncc_skimage(query, reference)
        np.testing.assert_allclose(opencv.box, skimage.box)
        assert abs(opencv.score - skimage.score) < 1e-3
