"""The storyboard training loss (Eq. 13-15): symmetric contrastive loss over videos and classes.

Logits y [B,C] are `logit_scale * cos(t_c, o[b,c])` for every video b of the (global) batch
and every class c. Under DDP the caller gathers the logits of the whole global batch first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def storyboard_loss(logits: torch.Tensor, labels: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """Eq. 15: `L = L_T2V + lam * L_V2T`; logits [B,C], labels int [B] or multi-hot [B,C].

    Single-label (int labels), with k_b the samples sharing b's label (b included):

    * Eq. 13, `L_T2V = mean_b mean_{b' in k_b} -log softmax_over_batch(y[:, c_b])[b']`
    * Eq. 14, `L_V2T = mean_b mean_{b' in k_b} -log softmax_over_classes(y[b', :])[c_b]`

    Multi-label (multi-hot targets [B,C], bool or float, positive where > 0.5): the
    positives are all pairs P = {(b, c): target 1}, and each loss is the mean over P:

    * `L_T2V = mean_{(b,c) in P} -log softmax_over_batch(y[:, c])[b]`
    * `L_V2T = mean_{(b,c) in P} -log softmax_over_classes(y[b, :])[c]`

    With exactly one positive per row this is the single-label loss (the tests check it).
    A video without positives, or a class absent from the batch, adds no term of its own
    (the video still sits in the batch softmax of T2V as a negative). No positive at all
    gives 0 (with a graph, so `backward` still works).
    """
    y = logits.float()  # the softmaxes in fp32 whatever the autocast dtype
    log_p_over_batch = F.log_softmax(y, dim=0)
    log_p_over_classes = F.log_softmax(y, dim=1)
    if labels.dim() == 1:
        return _single_label(log_p_over_batch, log_p_over_classes, labels, lam)
    return _multi_label(log_p_over_batch, log_p_over_classes, labels, lam)


def _single_label(
    log_p_over_batch: torch.Tensor, log_p_over_classes: torch.Tensor, labels: torch.Tensor, lam
) -> torch.Tensor:
    labels = labels.long()
    same = (labels[:, None] == labels[None, :]).float()  # [b, b']: b' in k_b
    mean_over_k = same / same.sum(dim=1, keepdim=True)  # rows average over k_b
    # t2v[b', b] = -log softmax_over_batch(y[:, c_b])[b']
    t2v = -log_p_over_batch[:, labels]
    loss_t2v = (mean_over_k * t2v.t()).sum(dim=1).mean()
    # For b' in k_b, c_b = c_{b'}: the V2T term of b' is its own cross-entropy.
    v2t = -log_p_over_classes.gather(1, labels[:, None]).squeeze(1)  # [b']
    loss_v2t = (mean_over_k @ v2t).mean()
    return loss_t2v + lam * loss_v2t


def _multi_label(
    log_p_over_batch: torch.Tensor, log_p_over_classes: torch.Tensor, targets: torch.Tensor, lam
) -> torch.Tensor:
    positive = (targets.float() > 0.5).float()
    n_positive = positive.sum().clamp(min=1.0)
    loss_t2v = -(positive * log_p_over_batch).sum() / n_positive
    loss_v2t = -(positive * log_p_over_classes).sum() / n_positive
    return loss_t2v + lam * loss_v2t
