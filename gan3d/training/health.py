"""Divergence / collapse detection from tick statistics: one warning line, a W&B alert, optional stop."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

LOGIT_GAP = 30.0  # |E[D(real)] - E[D(fake)]| this large means D separates without bound
SWD_RATIO = 4.0  # SWD this many times its best (after 3 evaluations) means the samples fell apart


@dataclass
class HealthMonitor:
    best_swd: float = math.inf
    swd_evals: int = 0
    warnings: list[str] = field(default_factory=list)

    def check(self, row: dict) -> Optional[str]:
        """Returns a one-line reason when training looks diverged or collapsed, else None."""
        for key in ("loss_G", "loss_D_real", "loss_D_fake", "logits_real", "logits_fake"):
            v = row.get(key)
            if v is not None and not math.isfinite(v):
                return f"{key} is {v} at kimg {row['kimg']:.3f}"
        real, fake = row.get("logits_real"), row.get("logits_fake")
        if real is not None and fake is not None and abs(real - fake) > LOGIT_GAP:
            return (f"D's real and fake logits separated by {abs(real - fake):.1f} (> {LOGIT_GAP}) at kimg "
                    f"{row['kimg']:.3f}: D wins without bound")
        swd = row.get("swd")
        if swd is not None and math.isfinite(swd):
            self.swd_evals += 1
            if self.swd_evals > 3 and swd > SWD_RATIO * self.best_swd:
                return f"SWD {swd:.1f} is over {SWD_RATIO}x its best {self.best_swd:.1f}: samples collapsed"
            self.best_swd = min(self.best_swd, swd)
        return None
