"""The two training objectives, behind one interface (`Objective`), in fractions of variance unexplained.

- `GramObjective` (the gram solver): the readout is the ridge solution for the current code, so the loss
  needs the data only through the N x N Gram matrix of the training rows (`GramFactor`); a step costs
  O(N r P) whatever the feature size F.
- `MSEObjective` (the adam solver): the plain MSE of an explicit readout over minibatches of the fit rows in
  order, as the reference loop.

Validation rows are predicted the way an unseen sample is: a 'sample'-code model uses each concept's mean
code over the fit rows, never the validation rows' own (untrained) codes.
"""
from __future__ import annotations

from typing import Protocol

import torch

from .distributed import all_reduce_sum, chunked_sum
from .errors import SSAEError
from .model import SupervisedSAE
from .ridge import penalty
from .rows import Rows, column_blocks


class Objective(Protocol):
    fit: torch.Tensor
    """Positions of the fit rows among the training rows."""

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """The fit positions of each optimiser step of an epoch."""

    def loss(self, model: SupervisedSAE, pos: torch.Tensor) -> torch.Tensor:
        """Differentiable training loss on the fit rows `pos`, a fraction of their variance."""

    def reduce_grads(self, model: SupervisedSAE) -> None:
        """Make the gradients the whole model's under torchrun (each rank holds some feature columns)."""

    def reduce_loss(self, loss: torch.Tensor) -> float:
        """The whole model's loss from this rank's `loss`."""

    def val_prediction(self, model: SupervisedSAE) -> torch.Tensor | None:
        """The validation rows as the model predicts them (None without validation rows)."""

    def val_error(self, prediction: torch.Tensor) -> float:
        """Fraction of the validation rows' variance that a prediction leaves unexplained."""


def val_codes(model: SupervisedSAE, mask: torch.Tensor, ids: torch.Tensor, fit: torch.Tensor,
              rows: torch.Tensor) -> torch.Tensor:
    """Slot codes of `rows` as unseen samples: a 'sample' model codes them by its concept means over the fit rows."""
    if model.cfg.code == "sample":
        return model.code(mask[rows], slots=model.concept_means(mask[fit], ids[fit]))
    return model.code(mask[rows])


class GramFactor:
    """The training rows as a ridge readout sees them: L_fit [n_fit, r] with L_fit L_fit^T ~ G_fit = Yc Yc^T over
    the fit rows (centred on their mean), from the eigenvectors of G_fit that hold `energy` of its trace (r << F),
    and L_val, the validation rows projected onto the same r directions of feature space. The directions come from
    the fit rows alone, so that validation measures a model that never saw the validation rows.

    G is a sum over the n_columns feature columns: in memory or streamed, one pass; under torchrun each rank
    sums its own columns, and the ranks' sums are added in a fixed order (`chunked_sum`), so G has the same
    bits in any number of processes."""

    def __init__(self, Y: Rows, n_columns: int, fit: torch.Tensor, val: torch.Tensor, energy: float = 0.99,
                 chunk: int = 1 << 15):
        n, dev = Y.shape[0], fit.device

        def part(a: int, b: int) -> torch.Tensor:
            G = torch.zeros(n, n, dtype=torch.float64, device=dev)
            for _, c in column_blocks(Y, chunk, a, b):
                G += (c @ c.T).double()
            return G
        G = chunked_sum(n_columns, part, (n, n), dev)
        p = torch.zeros(n, dtype=torch.float64, device=dev)
        p[fit] = 1.0 / fit.numel()
        Gp = G @ p  # centring on the fit mean: (I - 1 p^T) G (I - p 1^T), in O(n^2)
        G = G - Gp[None, :] - Gp[:, None] + p @ Gp
        lam, U = top_eigen(G[fit][:, fit], energy)
        root = lam.sqrt()
        self.fit, self.val, self.rank = fit, val, lam.numel()
        self.L_fit = (U * root).float()
        # y_v's coordinates along the fit rows' directions q_i = Yc_fit^T u_i / sqrt(lam_i): G[v, fit] u_i / sqrt(lam_i)
        self.L_val = (G[val][:, fit] @ U / root.clamp(min=1e-30)).float()
        diag = G.diagonal()
        self.tr_fit = float(diag[fit].sum())
        if self.tr_fit <= 0:
            raise SSAEError("the training rows do not vary (every feature is constant over them): there is nothing "
                            "to fit; check that the capture recorded the prompts' features")
        self.tr_val = float(diag[val].sum()) if val.numel() else None
        # what the factor leaves out of the validation rows counts as unexplained
        self.rest_val = max(self.tr_val - float((self.L_val.double() ** 2).sum()), 0.0) if val.numel() else None


def top_eigen(G: torch.Tensor, energy: float, k: int = 256, oversample: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The leading eigenpairs (values [r], vectors [n, r]) of a symmetric PSD matrix that hold `energy` of its
    trace, by randomised subspace iteration (one power step), doubling the subspace until it holds them.

    At n = 2680 this takes a tenth of a full eigendecomposition; with a fixed seed it is deterministic, and
    a subspace of half the size or more falls back to the full one."""
    n = G.shape[0]
    target = energy * float(G.diagonal().sum().clamp(min=0))
    gen = torch.Generator(device=G.device).manual_seed(0)
    while True:
        if 2 * (k + oversample) >= n:
            lam, U = torch.linalg.eigh(G)
            lam, U = lam.flip(0).clamp(min=0), U.flip(1)
            break
        omega = torch.randn(n, k + oversample, dtype=G.dtype, device=G.device, generator=gen)
        Q = torch.linalg.qr(G @ torch.linalg.qr(G @ omega).Q).Q
        lam, V = torch.linalg.eigh(Q.T @ G @ Q)
        lam, U = lam.flip(0).clamp(min=0), Q @ V.flip(1)
        if float(lam[:k].sum()) >= target:
            break
        k *= 2
    r = min(int((lam.cumsum(0) < target).sum()) + 1, lam.numel())
    return lam[:r], U[:, :r]


class GramObjective:
    """Loss of the best ridge readout for the current code, from the Gram factor alone.

    With the basis Ht on the fit rows (centred), A = (B + lambda I)^-1, B = Ht^T Ht, M = L_fit^T Ht and
    Z = A M^T (the readout in the factor's coordinates): SSE = tr G - tr(M Z) - lambda ||Z||^2
    (as A B = I - lambda A). Validation rows are predicted as (H_val - mean) Z."""

    def __init__(self, factor: GramFactor, mask: torch.Tensor, ids: torch.Tensor, ridge: float):
        self.factor, self.mask, self.ids, self.ridge = factor, mask, ids, ridge
        self.fit, self.val = factor.fit, factor.val
        self._fixed: tuple | None = None  # the code's own terms while it is not being trained

    def batches(self, epoch: int) -> list[torch.Tensor]:
        return [self.fit]

    def _code_terms(self, model: SupervisedSAE, code: torch.Tensor):
        """Centred code, its mean, B_cc and M_c of a code that does not change (the default preset's): worked
        out once, so that a step only pays for the hidden units' share of B and M."""
        slots = model.slots().detach()
        if self._fixed is None or not torch.equal(self._fixed[0], slots):
            mean = code.mean(0)
            centred = code - mean
            self._fixed = (slots.clone(), centred, mean, centred.T @ centred, self.factor.L_fit.T @ centred)
        return self._fixed[1:]

    def _readout(self, model: SupervisedSAE):
        f = self.factor
        code = model.code(self.mask[self.fit], self.ids[self.fit])
        if model.cfg.decoder == "mlp" and not code.requires_grad:
            C, c_mean, B_cc, M_c = self._code_terms(model, code)
            Hh = model.hidden(code)
            hh_mean = Hh.mean(0)
            Hh = Hh - hh_mean
            B_ch = C.T @ Hh
            B = torch.cat([torch.cat([B_cc, B_ch], 1), torch.cat([B_ch.T, Hh.T @ Hh], 1)])
            M = torch.cat([M_c, f.L_fit.T @ Hh], 1)
            h_mean = torch.cat([c_mean, hh_mean])
        else:
            H = model.basis(code)
            h_mean = H.mean(0)
            Ht = H - h_mean
            B = Ht.T @ Ht
            M = f.L_fit.T @ Ht  # [r, P]
        lam = penalty(B, self.ridge)
        chol = torch.linalg.cholesky(B + lam * torch.eye(B.shape[0], dtype=B.dtype, device=B.device))
        Z = torch.cholesky_solve(M.T, chol)  # [P, r]
        return M, Z, lam, h_mean

    def loss(self, model: SupervisedSAE, pos: torch.Tensor) -> torch.Tensor:
        M, Z, lam, _ = self._readout(model)
        tr = self.factor.tr_fit
        return (tr - (M * Z.T).sum() - lam * (Z * Z).sum()) / tr

    def reduce_grads(self, model: SupervisedSAE) -> None:
        """Nothing to do: every rank holds the whole Gram matrix and computes the same loss."""

    def reduce_loss(self, loss: torch.Tensor) -> float:
        return float(loss)

    @torch.no_grad()
    def val_prediction(self, model: SupervisedSAE) -> torch.Tensor | None:
        if not self.val.numel():
            return None
        _, Z, _, h_mean = self._readout(model)
        Hv = model.basis(val_codes(model, self.mask, self.ids, self.fit, self.val))
        return (Hv - h_mean) @ Z

    def val_error(self, prediction: torch.Tensor) -> float:
        f = self.factor
        return (float(((f.L_val - prediction).double() ** 2).sum()) + f.rest_val) / max(f.tr_val, 1e-30)


class MSEObjective:
    """Plain MSE with an explicit readout, over minibatches of the fit rows in order (the reference loop).

    Under torchrun each rank holds a slice of the feature columns and of W, b: its loss is its columns'
    share, so the code and MLP gradients are summed across ranks (`reduce_grads`) and every rank takes
    the step one process would; Adam is elementwise, so the readout slices follow suit."""

    def __init__(self, Y: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor, fit: torch.Tensor, val: torch.Tensor,
                 batch_size: int | None, amp: bool):
        self.Y, self.mask, self.ids, self.fit, self.val = Y, mask, ids, fit, val
        self.batch_size, self.amp = batch_size, amp and Y.is_cuda
        self.var_fit = all_reduce_sum(((Y[fit] - Y[fit].mean(0)) ** 2).sum(1).mean())
        self.var_val = all_reduce_sum(((Y[val] - Y[val].mean(0)) ** 2).sum(1).mean()) if val.numel() else None

    def batches(self, epoch: int) -> list[torch.Tensor]:
        return list(self.fit.split(self.batch_size or self.fit.numel()))

    def loss(self, model: SupervisedSAE, pos: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", torch.bfloat16, enabled=self.amp):
            pred = model(self.mask[pos], self.ids[pos])
        return ((pred.float() - self.Y[pos]) ** 2).sum(1).mean() / self.var_fit

    def reduce_grads(self, model: SupervisedSAE) -> None:
        for name, p in model.named_parameters():
            if name not in ("W", "b") and p.grad is not None:
                all_reduce_sum(p.grad)

    def reduce_loss(self, loss: torch.Tensor) -> float:
        return float(all_reduce_sum(loss.clone()))

    @torch.no_grad()
    def val_prediction(self, model: SupervisedSAE) -> torch.Tensor | None:
        if self.var_val is None:
            return None
        code = val_codes(model, self.mask, self.ids, self.fit, self.val)
        return torch.cat([model.decode(c) for c in code.split(4096)])

    def val_error(self, prediction: torch.Tensor) -> float:
        err = ((prediction - self.Y[self.val]) ** 2).sum(1).mean()
        return float(all_reduce_sum(err) / self.var_val)
