"""TPP, the text-only quality score of a sub-text set (Eq. 2-4), and its alpha/beta registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from storyboard_common.errors import UserError

LOG_CLAMP = 1e-6

# The paper's "scaling functions" alpha and beta, by name; names are written into artifacts.
SCALINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "complement": lambda x: 1.0 - x,  # default: more related, more diverse -> higher TPP
    "identity": lambda x: x,  # the literal reading of Eq. 2
}


def scaling(name: str, flag: str = "--alpha") -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in SCALINGS:
        raise UserError(f"unknown {flag} {name!r}; known: {', '.join(SCALINGS)}.")
    return SCALINGS[name]


@dataclass(frozen=True)
class TPPResult:
    score: torch.Tensor  # [...]
    sigma: torch.Tensor  # [..., N]
    delta: torch.Tensor  # [..., N]


def relatedness(global_emb: torch.Tensor, sub_embs: torch.Tensor) -> torch.Tensor:
    """Eq. 3: sigma_n = (cos(t_c, s_n) + 1) / 2.  [..., D], [..., N, D] -> [..., N]."""
    cos = torch.einsum(
        "...d,...nd->...n", F.normalize(global_emb, dim=-1), F.normalize(sub_embs, dim=-1)
    )
    return (cos + 1) / 2


def diversity(sub_embs: torch.Tensor) -> torch.Tensor:
    """Eq. 4: delta_n = 1 - mean_{n' != n} (cos(s_n, s_n') + 1) / 2.  [..., N, D] -> [..., N]."""
    unit = F.normalize(sub_embs, dim=-1)
    sim = (unit @ unit.transpose(-1, -2) + 1) / 2  # [..., N, N]
    n = sub_embs.shape[-2]
    off_diagonal = sim.sum(-1) - torch.diagonal(sim, dim1=-2, dim2=-1)
    return 1 - off_diagonal / max(n - 1, 1)


def tpp(global_emb, sub_embs, alpha: str = "complement", beta: str = "complement") -> TPPResult:
    """Eq. 2: TPP = exp(-(1/N) sum_n log(alpha(sigma_n) * beta(delta_n))), log argument >= 1e-6.

    global_emb [..., D] and sub_embs [..., N, D] need not be normalised; any leading batch
    shape is scored at once.
    """
    global_emb = torch.as_tensor(global_emb, dtype=torch.float32)
    sub_embs = torch.as_tensor(sub_embs, dtype=torch.float32)
    sigma = relatedness(global_emb, sub_embs)
    delta = diversity(sub_embs)
    product = scaling(alpha, "--alpha")(sigma) * scaling(beta, "--beta")(delta)
    score = torch.exp(-torch.log(product.clamp_min(LOG_CLAMP)).mean(-1))
    return TPPResult(score=score, sigma=sigma, delta=delta)
