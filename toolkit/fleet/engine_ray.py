"""Fleet validation on Ray Data: the same computation as ``engine_local``, on every CPU of a cluster.

``run_ray(plan)`` is ``edgecam fleet validate --engine ray``. It starts a local Ray instance, or
joins a running cluster when given its address, and runs the fleet as one streaming Ray Data
pipeline:

1. **read records** — one dataset row per log (:class:`~toolkit.fleet.logs.LogRef`), one task
   per log: ``flat_map`` reads it on a worker with :class:`~toolkit.fleet.logs.FleetLog` (the one
   tolerant run-log reader, the rules of ``validate --from-log``) and yields the frame rows to
   score. Beside the pipeline, one small Ray task per log sends the driver that log's
   :class:`~toolkit.fleet.logs.LogTally` (records, corrupt and skipped records, the class
   timeline): a log is read twice, which costs well under 1% of the Grad-CAM pass;
2. **score** — ``map_batches`` with :class:`ScoringActor`, an actor class that builds
   :class:`~toolkit.fleet.scoring.FrameScorer` once per worker (the Keras models load once,
   not per batch) and runs batched Grad-CAM and the per-frame metrics;
3. **aggregate** — the driver streams the scored batches (``iter_batches``) into a
   :class:`~toolkit.fleet.aggregate.FleetAggregator`, one block at a time.

Paths in the plan must be readable by every worker: a local disk on one machine, a shared
mount (NFS, …) on a cluster. The scoring actors run TensorFlow with ``TF_CPP_MIN_LOG_LEVEL=2``
and ``TF_ENABLE_ONEDNN_OPTS=0`` (:data:`WORKER_ENV`, set before TensorFlow loads, as in the
local engine's process) and one thread per CPU Ray gave them.

Ray is optional (``pip install 'edgecam[fleet]'``); this module imports it only when called.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import Any, Dict, Iterator, List, Optional

from firmware_host.errors import EdgecamError, InputError, MissingDependencyError

__all__ = ["run_ray", "ray_session", "require_ray", "ScoringActor", "WORKER_ENV", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'edgecam[fleet]'"
#: Environment of every Ray worker: quiet TensorFlow, and the plain (oneDNN-free) kernels the
#: local engine and the tests use, so both engines compute the same numbers.
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def require_ray():
    """Import Ray Data, or say which extra installs it.

    Raises:
        MissingDependencyError: ``ray[data]`` is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401  (the pipeline needs Ray Data, not only Ray core)
    except ImportError as exc:
        raise MissingDependencyError(
            f"--engine ray needs Ray Data, which is not installed ({exc}). Install the fleet extra: "
            f"{INSTALL_HINT} (or use --engine local)."
        ) from exc
    return ray


@contextlib.contextmanager
def ray_session(address: Optional[str] = None, num_cpus: Optional[int] = None) -> Iterator[int]:
    """A connected Ray session; yields the number of CPUs the job may use.

    An already initialised Ray (a test, a notebook) is reused as is and left running. Otherwise
    Ray starts a local instance with ``num_cpus`` CPUs (all of this machine's when None) or, with
    ``address``, joins that cluster (``auto``, ``HOST:6379`` or ``ray://HOST:10001``); either
    is shut down on exit.

    Raises:
        InputError: ``num_cpus`` is not positive, or both ``address`` and ``num_cpus`` are given
            (a cluster's CPUs are its own).
    """
    ray = require_ray()
    if num_cpus is not None and num_cpus < 1:
        raise InputError(f"--num-cpus must be at least 1. Got {num_cpus}.")
    if address and num_cpus is not None:
        raise InputError(
            f"--num-cpus {num_cpus} applies to a local Ray instance only; the cluster at {address} "
            "has its own CPUs. Drop --num-cpus, or drop --ray-address to start a local instance."
        )
    started = not ray.is_initialized()
    if started:
        kwargs: Dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address:
            kwargs["address"] = address
        else:
            kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count() or 1)
        try:
            with _environment(WORKER_ENV):  # inherited by the local instance's workers
                ray.init(**kwargs)
        except ConnectionError as exc:
            raise InputError(_join_hint(address, exc)) from exc
    try:
        yield max(1, int(ray.cluster_resources().get("CPU", 1)))
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def _environment(values: Dict[str, str]):
    """``values`` set (where unset) in this process's environment, then restored.

    Not a job ``runtime_env``: workers of a job with one cannot be Ray's prestarted workers and
    each goes through a setup process (measured: 13.5 s instead of 5.5 s for the first four
    tasks on a loaded 2-core machine). The scoring actors also set them before TensorFlow loads.
    """
    saved = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _join_hint(address: Optional[str], exc: BaseException) -> str:
    """One line: why joining ``address`` failed and what to do."""
    auth = "Authentication" in repr(exc) or "auth" in str(getattr(exc, "__cause__", "") or "").lower()
    if auth:
        return (f"The Ray cluster at {address} refused this driver's token ({exc}). Ray clusters use token "
                "authentication: export RAY_AUTH_MODE=token and the cluster's token (copy the head's "
                "~/.ray/auth_token, or set RAY_AUTH_TOKEN) before running fleet validate.")
    return (f"Cannot join the Ray cluster at {address}: {exc}. Start it with `ray start --head` and pass the "
            "address it prints as --ray-address (or `auto` on one of its nodes).")


class ScoringActor:
    """The Ray actor of the scoring stage: one :class:`FrameScorer` per worker process.

    Ray Data builds it with ``fn_constructor_kwargs`` in each worker of the actor pool, so the
    Keras models load once per worker; every call scores one numpy batch of frame rows.

    Args:
        **scorer_kwargs: :class:`~toolkit.fleet.scoring.FrameScorer`'s arguments
            (:meth:`FleetPlan.scorer_kwargs`: Keras paths every worker can read).
    """

    def __init__(self, **scorer_kwargs: Any) -> None:
        for name, value in WORKER_ENV.items():  # a worker of a cluster started without them
            os.environ.setdefault(name, value)
        _limit_threads()
        from .scoring import FrameScorer

        self.scorer = FrameScorer(**scorer_kwargs)

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return self.scorer(batch)


def _limit_threads() -> None:
    """TensorFlow uses the CPUs Ray gave this actor, not every core of the node.

    An actor holds one CPU; by default TensorFlow would start one thread per core in every actor,
    and N actors on N cores would fight over them.
    """
    import ray

    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0)) or 1
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:  # TensorFlow already running in this worker: keep its pools
        pass


def run_ray(plan, address: Optional[str] = None, num_cpus: Optional[int] = None, *,
            progress: bool = False):
    """Validate the fleet of ``plan`` as a Ray Data pipeline; returns the filled aggregator.

    Args:
        plan: the :class:`~toolkit.fleet.plan.FleetPlan` (its paths readable by every worker).
        address: a running cluster to join (``auto``, ``HOST:6379``, ``ray://HOST:10001``);
            None starts a local Ray instance.
        num_cpus: CPUs of the local instance (None: all of this machine's).
        progress: show Ray Data's progress bars on stderr.

    Returns:
        A :class:`~toolkit.fleet.aggregate.FleetAggregator` with every log's tally and scored frames
        (rows streamed to the plan's spool, still open: ``close()`` it), as ``run_local``'s.

    Raises:
        MissingDependencyError: Ray Data is not installed (``pip install 'edgecam[fleet]'``).
        InputError: the cluster cannot be joined, or bad ``num_cpus``.
        EdgecamError: what a worker raised (a log that cannot be read, a model that cannot be loaded).
    """
    from .aggregate import FleetAggregator

    aggregator = FleetAggregator.for_plan(plan)
    if not plan.logs:
        return aggregator
    with ray_session(address, num_cpus) as cpus, _quiet_data(progress), _worker_errors():
        import ray

        tallies = _submit_tallies(ray, plan)
        for batch in _scored_dataset(plan, cpus).iter_batches(batch_format="numpy", batch_size=None):
            aggregator.add_rows(batch)
            tallies = _collect(ray, tallies, aggregator, block=False)
        _collect(ray, tallies, aggregator, block=True)
    return aggregator


# -- the pipeline ------------------------------------------------------------------------------
def _scored_dataset(plan, cpus: int):
    """Logs read on workers (one task per log), then scored by a pool of up to ``cpus`` :class:`ScoringActor`."""
    import ray.data

    items = [{"ref": pickle.dumps(ref)} for ref in plan.logs]
    frames = ray.data.from_items(items, override_num_blocks=len(items)).flat_map(_frames_of, fn_kwargs={"plan": plan})
    return frames.map_batches(
        ScoringActor,
        fn_constructor_kwargs=plan.scorer_kwargs(),
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus)),
        batch_size=plan.batch_size,
        batch_format="numpy",
        num_cpus=1,
    )


def _frames_of(row: Dict[str, Any], plan) -> Iterator[Dict[str, Any]]:
    yield from plan.fleet_log(pickle.loads(row["ref"])).frames()


def _tally(plan, ref):
    """A log's :class:`~toolkit.fleet.logs.LogTally`: its records read, its frames not scored."""
    log = plan.fleet_log(ref)
    for _ in log.frames():
        pass
    return log.tally


def _submit_tallies(ray, plan) -> List[Any]:
    """One small Ray task per log for its tally, running beside the scoring pipeline.

    The tally (records, corrupt and skipped records, the class timeline) is a few kilobytes
    whatever the log's length; reading a log a second time for it costs well under 1% of the
    Grad-CAM pass. Half a CPU each, so they never hold back the scoring actors.
    """
    task = ray.remote(num_cpus=0.5)(_tally)
    plan_ref = ray.put(plan)
    return [task.remote(plan_ref, ref) for ref in plan.logs]


def _collect(ray, pending: List[Any], aggregator, block: bool) -> List[Any]:
    """Add the finished tallies to ``aggregator``; with ``block``, wait for all. Returns the rest."""
    while pending:
        ready, pending = ray.wait(pending, num_returns=1 if block else len(pending), timeout=None if block else 0)
        for ref in ready:
            aggregator.add_tally(ray.get(ref))
        if not block:
            break
    return pending


@contextlib.contextmanager
def _worker_errors():
    """An edgecam error raised on a worker is raised here as itself (one line for the CLI), not as Ray's wrapper."""
    try:
        yield
    except EdgecamError:
        raise
    except Exception as exc:
        cause = _edgecam_cause(exc)
        if cause is None:
            raise
        raise cause from exc


def _edgecam_cause(exc: BaseException) -> Optional[EdgecamError]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, EdgecamError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def _quiet_data(progress: bool):
    """Ray Data's progress bars only when asked, and its INFO log lines never (for the length of a run)."""
    import logging

    import ray.data

    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars
    logger = logging.getLogger("ray.data")
    level = logger.level
    context.enable_progress_bars = bool(progress)
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        context.enable_progress_bars = saved
        logger.setLevel(level)
