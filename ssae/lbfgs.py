"""L-BFGS with a strong Wolfe line search, for the small deterministic full-batch objective of the gram solver.

The gram solver optimises a few thousand parameters (a hidden layer over the concept weights) on a smooth
loss that costs one O(N r P) pass per evaluation, so a quasi-Newton step with a line search reaches in tens
of iterations what Adam's small steps take hundreds for. This one keeps the loss and gradient of the current
point between calls (one evaluation per accepted unit step, none repeated when a call starts), and its whole
state is tensors, lists of tensors and numbers, which a checkpoint stores (`ssae.checkpoint`). It is not a
`torch.optim.Optimizer`: the first of those built in a process imports torch._dynamo, about a second.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch


def _cubic_min(t1: float, f1: float, g1: float, t2: float, f2: float, g2: float, lo: float, hi: float) -> float:
    """Minimiser of the cubic through (t1, f1, g1) and (t2, f2, g2), kept inside [lo, hi] (bisection when the
    cubic has no minimum there)."""
    d1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
    disc = d1 * d1 - g1 * g2
    if disc >= 0 and math.isfinite(disc):
        d2 = math.copysign(math.sqrt(disc), t2 - t1)
        denom = g2 - g1 + 2 * d2
        if denom != 0:
            t = t2 - (t2 - t1) * (g2 + d2 - d1) / denom
            if math.isfinite(t):
                return min(max(t, lo), hi)
    return (lo + hi) / 2


class LBFGS:
    """Limited-memory BFGS over a list of parameters; `step(closure)` runs up to `max_iter` iterations.

    closure() returns the loss with the parameters' gradients filled (zero them, compute, backward)."""

    def __init__(self, params: list[torch.nn.Parameter], max_iter: int = 10, history: int = 20, c1: float = 1e-4,
                 c2: float = 0.9, max_evals: int = 25, tolerance_grad: float = 1e-9, tolerance_change: float = 1e-12):
        self.params = list(params)
        self.max_iter, self.history, self.c1, self.c2, self.max_evals = max_iter, history, c1, c2, max_evals
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self.state: dict = {"s": [], "y": [], "n_iter": 0, "converged": False}

    # -- parameters as one vector ---------------------------------------------------------------
    def _get(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def _set(self, x: torch.Tensor) -> None:
        i = 0
        for p in self.params:
            p.copy_(x[i:i + p.numel()].view_as(p))
            i += p.numel()

    def _evaluate(self, closure: Callable[[], torch.Tensor], x: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Loss and gradient at x; a point where the loss cannot be computed (a factorisation that fails on
        non-finite values far along a trial step) counts as an infinite loss."""
        self._set(x)
        try:
            with torch.enable_grad():
                loss = float(closure().detach())
        except torch.linalg.LinAlgError:
            return math.inf, torch.zeros_like(x)
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params])
        return loss, g.detach().clone()

    # -- the iterations -------------------------------------------------------------------------
    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        """-H g by the two-loop recursion over the stored curvature pairs."""
        s_list, y_list = self.state["s"], self.state["y"]
        q = -g
        alphas = []
        for s, y in zip(reversed(s_list), reversed(y_list)):
            a = float(s @ q) / float(y @ s)
            alphas.append(a)
            q = q - a * y
        if s_list:
            q = q * (float(s_list[-1] @ y_list[-1]) / float(y_list[-1] @ y_list[-1]))
        for (s, y), a in zip(zip(s_list, y_list), reversed(alphas)):
            q = q + (a - float(y @ q) / float(y @ s)) * s
        return q

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Up to max_iter iterations from the current parameters; returns the loss after them (a full-batch
        loss is known at every accepted point, unlike a minibatch one)."""
        st = self.state
        x = self._get()
        if "f" not in st:
            st["f"], st["g"] = self._evaluate(closure, x)
        for _ in range(self.max_iter):
            if st["converged"]:
                break
            f, g = st["f"], st["g"]
            if float(g.abs().max()) <= self.tolerance_grad:
                st["converged"] = True
                break
            d = self._direction(g)
            gtd = float(g @ d)
            if gtd > -1e-30:  # not a descent direction: forget the curvature pairs
                st["s"], st["y"] = [], []
                d, gtd = -g, -float(g @ g)
            t0 = 1.0 if st["n_iter"] else min(1.0, 1.0 / float(g.abs().sum()))
            t, f_new, g_new = self._line_search(closure, x, d, f, gtd, t0)
            if t == 0.0:  # no decrease found along d: stop here
                self._set(x)
                st["converged"] = True
                break
            s, y = t * d, g_new - g
            if float(s @ y) > 1e-10 * float(y @ y):
                st["s"].append(s)
                st["y"].append(y)
                if len(st["s"]) > self.history:
                    st["s"].pop(0)
                    st["y"].pop(0)
            x = x + s
            st["n_iter"] += 1
            st["f"], st["g"] = f_new, g_new
            if float(s.abs().max()) <= self.tolerance_change or abs(f_new - f) <= self.tolerance_change:
                st["converged"] = True
        self._set(x)
        return torch.tensor(st["f"])

    def _line_search(self, closure, x: torch.Tensor, d: torch.Tensor, f0: float, gtd0: float,
                     t: float) -> tuple[float, float, torch.Tensor]:
        """A step t along d meeting the strong Wolfe conditions (Nocedal & Wright, algorithms 3.5 and 3.6):
        bracket a step, then zoom in by safeguarded cubic interpolation. Returns (t, f, g) at the step, or
        t = 0 when no evaluation lowered the loss."""
        evals = 0
        best = (0.0, f0, None)

        def phi(step: float) -> tuple[float, torch.Tensor, float]:
            nonlocal evals, best
            evals += 1
            f, g = self._evaluate(closure, x + step * d)
            if not math.isfinite(f):
                f = math.inf
            elif f < best[1]:
                best = (step, f, g)
            return f, g, float(g @ d)

        t_prev, f_prev, gtd_prev = 0.0, f0, gtd0
        lo = hi = None
        while evals < self.max_evals:
            f, g, gtd = phi(t)
            if f > f0 + self.c1 * t * gtd0 or (evals > 1 and f >= f_prev):
                lo, hi = (t_prev, f_prev, gtd_prev), (t, f, gtd)
                break
            if abs(gtd) <= -self.c2 * gtd0:
                return t, f, g
            if gtd >= 0:
                lo, hi = (t, f, gtd), (t_prev, f_prev, gtd_prev)
                break
            # still going down and steeply: a longer step, from the cubic through the last two points
            t_next = _cubic_min(t_prev, f_prev, gtd_prev, t, f, gtd, 2.0 * t, 10.0 * t)
            t_prev, f_prev, gtd_prev = t, f, gtd
            t = t_next
        while lo is not None and evals < self.max_evals:  # zoom: lo holds the lowest Armijo point so far
            a, b = sorted((lo[0], hi[0]))
            if b - a < 1e-12 * max(1.0, b):
                break
            width = b - a
            f_hi = hi[1] if math.isfinite(hi[1]) else f0 + abs(gtd0) * hi[0]
            t = _cubic_min(lo[0], lo[1], lo[2], hi[0], f_hi, hi[2], a + 0.1 * width, b - 0.1 * width)
            f, g, gtd = phi(t)
            if f > f0 + self.c1 * t * gtd0 or f >= lo[1]:
                hi = (t, f, gtd)
            else:
                if abs(gtd) <= -self.c2 * gtd0:
                    return t, f, g
                if gtd * (hi[0] - lo[0]) >= 0:
                    hi = lo
                lo = (t, f, gtd)
        if best[2] is None:
            return 0.0, f0, None
        return best

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        st = self.state
        out = {k: (v.clone() if torch.is_tensor(v) else [t.clone() for t in v] if isinstance(v, list) else v)
               for k, v in st.items()}
        return {"state": {0: out}}

    def load_state_dict(self, d: dict) -> None:
        """The state of `state_dict`, its tensors moved to the parameters' device (checkpoints load on the CPU)."""
        dev = self.params[0].device
        st = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in d["state"].get(0, {}).items()}
        for k in ("s", "y"):
            st[k] = [t.to(dev) for t in st.get(k, [])]
        self.state = {"s": [], "y": [], "n_iter": 0, "converged": False} | st
