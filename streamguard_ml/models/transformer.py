"""The SQL Intent Transformer: a pretrained code encoder, an intent head and an anomaly head.

* **Encoder** — any Hugging Face encoder (CodeBERT in production, MiniLM in the
  embedded default, a tiny config in tests).
* **Pooling** — masked mean over the tokens of each window, then element-wise
  max over the windows of a sample, so a long function is covered by
  overlapping windows and a risky statement in any window is seen.
* **Intent head** — MLP → two logits (safe / vulnerable intent).
* **Anomaly head** — *not* trained by gradient.  It answers "how unlike the
  training data is this sample?": the Mahalanobis distance of the pooled
  embedding to the nearest class mean under a shared, shrunk (Ledoit–Wolf)
  covariance fitted on the training split, reported as the share of validation
  samples that are *less* unusual (0.5 = typical, 0.99 = more unusual than 99 %
  of validation code; 1.0 = beyond anything seen in validation).  Scores at or
  above :data:`ANOMALY_THRESHOLD` flag code the model was never trained for:
  its vulnerability score deserves less trust there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: Anomaly score from which a sample counts as unlike the training data (the validation 99th percentile).
ANOMALY_THRESHOLD = 0.99
#: Model families whose position ids start after the padding index (they lose two positions).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")


def max_positions(config: Any) -> int:
    """How many tokens (special tokens included) one window of this encoder may hold."""
    offset = 2 if config.model_type in _OFFSET_POSITIONS else 0
    return int(config.max_position_embeddings) - offset


class MahalanobisHead(nn.Module):
    """Distance-to-training-distribution, calibrated on validation (buffers only)."""

    def __init__(self, hidden: int, num_classes: int = 2, calibration_points: int = 101):
        super().__init__()
        self.register_buffer("means", torch.zeros(num_classes, hidden))
        self.register_buffer("precision", torch.eye(hidden))
        self.register_buffer("calibration", torch.linspace(0, 1, calibration_points))
        self.register_buffer("fitted", torch.zeros(()))

    @torch.no_grad()
    def fit(self, embeddings: torch.Tensor, labels: torch.Tensor, val_embeddings: torch.Tensor) -> None:
        from sklearn.covariance import LedoitWolf

        emb = embeddings.double().cpu()
        means = torch.stack([emb[labels.cpu() == c].mean(0) if (labels == c).any() else emb.mean(0)
                             for c in range(self.means.shape[0])])
        centred = emb - means[labels.cpu()]
        cov = LedoitWolf().fit(centred.numpy())
        self.means.copy_(means.float())
        self.precision.copy_(torch.from_numpy(cov.precision_).float())
        self.fitted.fill_(1.0)
        val = self.distance(val_embeddings)
        q = torch.linspace(0, 1, self.calibration.numel(), dtype=torch.float64)
        self.calibration.copy_(torch.quantile(val.double().cpu(), q).float())

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        diff = pooled.unsqueeze(1) - self.means.unsqueeze(0)  # [n, classes, h]
        d2 = torch.einsum("nch,hk,nck->nc", diff, self.precision, diff)
        return d2.clamp(min=0).min(dim=1).values.sqrt()

    def score(self, pooled: torch.Tensor) -> torch.Tensor:
        """Empirical CDF of the validation distances at this sample's distance (0..1).

        Linear between the stored validation quantiles, so the score is the share
        of validation samples closer to the training distribution than this one.
        """
        d = self.distance(pooled).float()
        cal = self.calibration.to(d.device).float().contiguous()
        n = cal.numel()
        upper = torch.searchsorted(cal, d.contiguous(), right=True).clamp(1, n - 1)
        lo, hi = cal[upper - 1], cal[upper]
        frac = ((d - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1)
        return ((upper - 1 + frac) / (n - 1)).clamp(0, 1)


class SQLIntentTransformer(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int = 2, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.intent_head = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.LayerNorm(hidden // 2), nn.GELU(),
                                         nn.Dropout(dropout), nn.Linear(hidden // 2, num_classes))
        self.anomaly = MahalanobisHead(hidden, num_classes)

    def input_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.get_input_embeddings()(input_ids)

    def pooled(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, window_sample: torch.Tensor,
               num_samples: int, inputs_embeds: torch.Tensor | None = None,
               output_attentions: bool = False) -> tuple[torch.Tensor, Any]:
        out = self.encoder(input_ids=None if inputs_embeds is not None else input_ids,
                           inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                           output_attentions=output_attentions)
        mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        per_window = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)
        index = window_sample.unsqueeze(-1).expand_as(per_window)
        init = torch.full((num_samples, per_window.shape[-1]), float("-inf"), dtype=per_window.dtype,
                          device=per_window.device)
        per_sample = init.scatter_reduce(0, index, per_window, reduce="amax", include_self=True)
        return per_sample, out.attentions if output_attentions else None

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, window_sample: torch.Tensor,
                num_samples: int, inputs_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(intent logits [samples, 2], pooled embeddings [samples, hidden])."""
        pooled, _ = self.pooled(input_ids, attention_mask, window_sample, num_samples, inputs_embeds)
        return self.intent_head(pooled), pooled
