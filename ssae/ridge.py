"""Ridge regression, the one closed form behind every solved readout, probe and baseline in ssae.

The penalty is relative: lambda = ridge * mean(diag(B)) for the Gram matrix B = H^T H of the centred basis H, so
one `ridge` means the same on any basis scale. `ridge_path` prices a whole grid of penalties from one
eigendecomposition, which is how a penalty is picked on validation rows.
"""
from __future__ import annotations

import torch


def penalty(B_PP: torch.Tensor, ridge: float) -> torch.Tensor:
    """The absolute penalty lambda for a relative `ridge` on the Gram matrix B [P, P] (a tiny floor keeps
    an all-zero basis solvable)."""
    return ridge * B_PP.diagonal().mean().clamp(min=1e-12) + 1e-10


def ridge_solve(B_PP: torch.Tensor, rhs_PX: torch.Tensor, ridge: float) -> torch.Tensor:
    """(B + lambda I)^-1 rhs, in B's dtype: the ridge coefficients when rhs = H^T Y."""
    eye = torch.eye(B_PP.shape[0], dtype=B_PP.dtype, device=B_PP.device)
    return torch.linalg.solve(B_PP + penalty(B_PP, ridge) * eye, rhs_PX.to(B_PP.dtype))


def ridge_factor(H_NP: torch.Tensor, ridge: float) -> torch.Tensor:
    """R = (H^T H + lambda I)^-1 H^T [P, N] for a centred basis H: the readout is R Y for centred targets Y."""
    return ridge_solve(H_NP.T @ H_NP, H_NP.T, ridge)


def ridge_fit(H_NP: torch.Tensor, Y_NF: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """W [P, F], b [F] with Y ~ H W + b, the intercept unpenalised (both centred first), in float64."""
    H, Y = H_NP.double(), Y_NF.double()
    h_mean, y_mean = H.mean(0), Y.mean(0)
    W = ridge_solve((H - h_mean).T @ (H - h_mean), (H - h_mean).T @ (Y - y_mean), ridge)
    return W, y_mean - h_mean @ W


def ridge_path(B_PP: torch.Tensor, D_VP: torch.Tensor, X1_PP: torch.Tensor, X2_PP: torch.Tensor, sse0: float,
               ridges: tuple[float, ...]) -> list[float]:
    """Validation SSE of the ridge readout W = A T, A = (B + lambda I)^-1, for every relative penalty in `ridges`.

    With T = H_fit^T Y_fit (centred on the fit rows) and validation rows predicted as D W (D = the validation
    basis minus the fit rows' mean basis), SSE = sse0 - 2 tr(A X1) + tr(D^T D A X2 A), where X1 = T Y_val^T D
    and X2 = T T^T, both [P, P] and summed over column blocks, and sse0 = ||Y_val||^2 (centred on the fit
    mean). One eigendecomposition of B serves every penalty.
    """
    mu, V = torch.linalg.eigh(B_PP.double())
    DD = V.T @ (D_VP.double().T @ D_VP.double()) @ V
    X1, X2 = V.T @ X1_PP.double() @ V, V.T @ X2_PP.double() @ V
    out = []
    for r in ridges:
        inv = 1.0 / (mu.clamp(min=0) + penalty(B_PP.double(), r))
        quad = (DD * inv[None, :] * X2 * inv[:, None]).sum()  # tr(DD diag(inv) X2 diag(inv)), X2 symmetric
        out.append(float(sse0 - 2 * (inv * X1.diagonal()).sum() + quad))
    return out
