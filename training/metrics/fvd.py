"""The Fréchet distance between two Gaussians fitted to feature sets: FVD when the features are I3D's.

``d^2 = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Fréchet 1957; Dowson & Landau 1982), with the
means and covariances (unbiased, ``n - 1``, as ``np.cov`` and the reference FVD code) of each set.
``tr (S1 S2)^(1/2)`` is computed in the stable symmetric form ``tr (S1^(1/2) S2 S1^(1/2))^(1/2)``: both
square roots are of symmetric positive semi-definite matrices, taken by ``eigh`` with eigenvalues clipped at 0,
so there is no complex part to drop and no ``eps`` offset to add when covariances are singular (fewer samples
than feature dimensions). TF-GAN's ``frechet_classifier_distance``, which the reference FVD calls, uses the
same symmetric form.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64; N must be at least 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features for a covariance, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr (S1 S2)^(1/2)`` = ``tr (S1^(1/2) S2 S1^(1/2))^(1/2)`` for covariances S1, S2."""
    root1 = _psd_sqrt(np.asarray(sigma1, dtype=np.float64))
    inner = root1 @ np.asarray(sigma2, dtype=np.float64) @ root1
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched shapes: mu {mu1.shape} and {mu2.shape}, sigma {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(distance, 0.0))  # >= 0 in exact arithmetic; rounding may give -1e-12


def fvd_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """FVD: the Fréchet distance between Gaussians fitted to (N, D) real and (M, D) generated I3D features."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(generated))
