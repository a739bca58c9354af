"""The solved readout: W, b of one model (or the mean of several members) by ridge, in one pass over the
feature columns, with the penalty picked on the validation rows when a grid of penalties is given."""
from __future__ import annotations

import torch

from .distributed import chunked_sum
from .model import SupervisedSAE, member_readout_rows
from .ridge import ridge_factor, ridge_path, ridge_solve
from .rows import Rows, column_blocks


@torch.no_grad()
def solve_readout(members: list[SupervisedSAE], target: SupervisedSAE, Y: Rows, mask: torch.Tensor,
                  ids: torch.Tensor, rows: torch.Tensor, ridge: float, chunk: int = 1 << 16) -> None:
    """Set target.W, target.b so that it predicts the mean of the members' ridge readouts fitted on `rows`
    (the target is `merge_members(members)`, or the one member itself)."""
    R, q = [], []
    for m in members:
        H = m.basis(m.code(mask[rows], ids[rows])).double()
        h_mean = H.mean(0)
        R_PN = ridge_factor(H - h_mean, ridge)  # W_m = R Y (R 1 = 0, so Y needs no centring)
        R.append(R_PN)
        q.append(h_mean @ R_PN)
    own = target is members[0]  # the one member itself, not merged: its rows need no folding
    rows_XN = torch.cat([R[0] if own else member_readout_rows(members, R), (sum(q) / len(q))[None]]).float()
    every = rows.numel() == Y.shape[0]
    for a, Yc in column_blocks(Y, chunk):
        Yc = Yc if every else Yc[rows]
        out = rows_XN @ Yc
        target.W[:, a:a + Yc.shape[1]] = out[:-1]
        target.b[a:a + Yc.shape[1]] = Yc.mean(0) - out[-1]  # b = mean(y) - mean(h) W


@torch.no_grad()
def solve_readout_picking_ridge(model: SupervisedSAE, Y: Rows, n_columns: int, mask: torch.Tensor, ids: torch.Tensor,
                                fit: torch.Tensor, val: torch.Tensor, ridges: tuple[float, ...],
                                chunk: int = 1 << 14) -> float:
    """Set model.W, b to the ridge readout on fit and validation rows together, its penalty the one of
    `ridges` whose readout fitted on the fit rows alone predicts the validation rows best; returns it.

    One pass over the columns: per block, T_fit = Hc_fit^T Y_fit and the validation terms that price every
    penalty at once (`ssae.ridge.ridge_path`), and T = Hc^T Y on all the rows, kept in W until the penalty
    is known; then W = (B + lambda I)^-1 T."""
    both = torch.cat([fit, val]).sort().values
    every = both.numel() == Y.shape[0]
    H = model.basis(model.code(mask, ids)).double()
    Hf, Hv, Ha = H[fit], H[val], H[both]
    hf_mean, ha_mean = Hf.mean(0), Ha.mean(0)
    Hfc, Hac, D = Hf - hf_mean, Ha - ha_mean, Hv - hf_mean
    Hfc32, Hac32, D32 = Hfc.float(), Hac.float(), D.float()
    P = H.shape[1]
    y_mean = torch.empty_like(model.b)

    def part(lo: int, hi: int) -> torch.Tensor:  # [X1, X2, sse0] of one chunk of columns, flat
        X1 = torch.zeros(P, P, dtype=torch.float64, device=H.device)
        X2 = torch.zeros_like(X1)
        sse0 = torch.zeros(1, dtype=torch.float64, device=H.device)
        for a, Yc in column_blocks(Y, chunk, lo, hi):
            cols = slice(a, a + Yc.shape[1])
            Yf = Yc[fit]
            T_fit = Hfc32.T @ Yf  # float32 products, float64 sums
            Yv = Yc[val] - Yf.mean(0)
            X1 += (T_fit @ (D32.T @ Yv).T).double()
            X2 += (T_fit @ T_fit.T).double()
            sse0 += (Yv.double() ** 2).sum()
            Ya = Yc if every else Yc[both]
            model.W[:, cols] = Hac32.T @ Ya
            y_mean[cols] = Ya.mean(0)
        return torch.cat([X1.flatten(), X2.flatten(), sse0])

    sums = chunked_sum(n_columns, part, (2 * P * P + 1,), H.device)  # the same penalty in any number of processes
    X1, X2 = sums[:P * P].view(P, P), sums[P * P:2 * P * P].view(P, P)
    errors = ridge_path(Hfc.T @ Hfc, D, X1, X2, float(sums[-1]), ridges)
    best = ridges[min(range(len(ridges)), key=errors.__getitem__)]
    B = Hac.T @ Hac
    A = ridge_solve(B, torch.eye(P, dtype=B.dtype, device=B.device), best).float()
    for a in range(0, model.W.shape[1], chunk):
        model.W[:, a:a + chunk] = A @ model.W[:, a:a + chunk]
    model.b.copy_(y_mean - ha_mean.float() @ model.W)
    return best
