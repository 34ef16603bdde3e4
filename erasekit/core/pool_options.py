"""The trajectory-pool fields a training method's config shares (light: no torch, so configs stay instant)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PoolOptions:
    """Training examples (a frozen model's trajectory, a step on it) come from a pool of `pool_size`
    trajectories drawn anew every `pool_refresh` steps, `batch_size` of them per step (core.trajectory's
    TrajectoryPool); 1 / 1 / 1 is the reference algorithms' one fresh trajectory per step."""

    batch_size: int = 1
    pool_size: int = 1
    pool_refresh: int = 1

    def pooled(self) -> bool:
        """Whether the examples come from the pool (a config whose trajectories follow the model being
        trained says no: then every step walks one fresh trajectory, and processes repeat it)."""
        return True

    def check_pool(self) -> None:
        if min(self.batch_size, self.pool_size, self.pool_refresh) < 1:
            raise ValueError("batch_size, pool_size and pool_refresh must be >= 1")
        if not self.pooled() and (self.batch_size, self.pool_size, self.pool_refresh) != (1, 1, 1):
            raise ValueError("batch_size, pool_size and pool_refresh > 1 need sample_from='base': trajectories of "
                             f"the model being trained ({getattr(self, 'sample_from', '')}) change with every step "
                             "and cannot be pooled")
