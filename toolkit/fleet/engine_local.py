"""``--engine local``: the fleet scored in this process, batch by batch, with a progress bar."""

from __future__ import annotations

import contextlib
from typing import Any, Union

from .aggregate import FleetAggregator
from .plan import FleetPlan, model_batches
from .scoring import FrameScorer

__all__ = ["run_local"]


def run_local(plan: FleetPlan, progress: Union[bool, Any] = True) -> FleetAggregator:
    """Score every planned frame of every log here; memory is one batch of rows plus the aggregator.

    Args:
        plan: the :class:`FleetPlan`.
        progress: show a tqdm bar over frames on stderr, or a bar to update (anything with
            ``update(n)``; the caller owns it).

    Returns:
        The :class:`FleetAggregator` of the plan's logs (its row spool still open: ``close()`` it).
    """
    aggregator = FleetAggregator.for_plan(plan)
    scorer = FrameScorer(**plan.scorer_kwargs())
    with _bar(plan, progress) as bar:
        for ref in plan.logs:
            log = plan.fleet_log(ref)
            for batch in model_batches(log.frames(), plan.batch_size):
                aggregator.add_rows(scorer(batch))
                bar.update(len(batch["frame"]))
            aggregator.add_tally(log.tally)
    return aggregator


def _bar(plan: FleetPlan, progress: Union[bool, Any]):
    if not isinstance(progress, bool):
        return contextlib.nullcontext(progress)
    from tqdm.auto import tqdm

    return tqdm(total=plan.frames, unit="frame", desc="fleet validate", disable=not progress)
