"""Assembly: builds a running node (`serve`) or worker (`worker`) from Settings and stops it."""

import contextlib
import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode import heap
from dicomnode.clock_step import CHECK_SECONDS, ClockStepWatch, run_every_tick_now
from dicomnode.config import NodeSettings, Settings, masked_url
from dicomnode.db import Database, open_database
from dicomnode.db.failures import database_away
from dicomnode.db.instances import (
    create_jobs_for_quiet_series,
    forget_instances_without_files,
    newest_path,
    seconds_to_next_completion,
)
from dicomnode.db.jobs import pull_back_future_times, reclaim_expired_leases
from dicomnode.db.models_wait import clear_models_wait, note_models_wait
from dicomnode.errors import ConfigError, first_line
from dicomnode.forward.associate import unresolvable_hosts
from dicomnode.guarded import DATABASE_NOT_ASKED, DatabaseHealth, Guarded
from dicomnode.memory_bound import host_memory, memory_warning
from dicomnode.native_heap import return_large_blocks
from dicomnode.observe.endpoint import HttpEndpoint, check_http_port_free, start_http_endpoint
from dicomnode.observe.throttle import ThrottledWarnings
from dicomnode.pipeline.admin_log import log_admin_actions
from dicomnode.pipeline.delivery import DeliveryQueues
from dicomnode.pipeline.lease import renew_every_lease_now
from dicomnode.pipeline.model_loading import RETRY_SECONDS, ModelLoading
from dicomnode.pipeline.recovery import RecoveryWatch, probe_destinations
from dicomnode.pipeline.retention import purge_delivered
from dicomnode.pipeline.runner import JobRunner
from dicomnode.ports import check_port_free, why_not
from dicomnode.receive import start_receiver
from dicomnode.receive.processes import ReceiverProcesses
from dicomnode.spool import Spool
from dicomnode.spool_identity import advance_generation, claim_both
from dicomnode.spool_lock import DataDirLock, lock_data_dir, refuse_if_held
from dicomnode.startup_checks import check_files
from dicomnode.status import JobPart

log = logging.getLogger(__name__)

COMPLETION_TICK = "completion"
REAPER_TICK = "reclaim-leases"
RECOVERY_TICK = "destinations-back"
MODELS_TICK = "load-models"  # only while the models do not load
# A step back shorter than this is waited out (a minute at most) rather than rewriting times.
PULL_BACK_AFTER_SECONDS = 60.0
# A generation that could not be counted (`Node._count_generation`): a line a minute.
_generation_failures = ThrottledWarnings(log)
# The completion tick comes back this long after the next series is due, so that the clocks'
# rounding never makes it come back a moment early and wait out a whole round.
COMPLETION_MARGIN = timedelta(milliseconds=20)


def _raise_open_file_limit() -> None:
    """The soft limit on open files up to the hard one (systemd's soft default is 1,024): each
    association, spool write and HTTP request takes a descriptor, and running out stops the
    listener from accepting anyone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _cannot_listen(node: NodeSettings, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot listen on {node.host}:{node.port}: {exc.strerror or exc} "
        f"({why_not(exc, 'node.port')})"
    )


def _local_utc_offset() -> str:
    """This host's offset from UTC (its TZ): the derived series of a source without
    TimezoneOffsetFromUTC are stamped in it, so a container left on UTC shows in the start line."""
    return datetime.now().astimezone().strftime("%z")


def _every(name: str, first_in: float = 0.0) -> dict[str, object]:
    """An interval tick's options: its id and the name APScheduler's own lines give it, never
    two runs at once, missed runs as one, however late (by default APScheduler drops a run more
    than a second late, with a WARNING: a busy start logged three, and a missed retention tick
    waited a whole hour), the first now (or `first_in` seconds from now)."""
    return {
        "id": name,
        "name": name,
        "trigger": "interval",
        "max_instances": 1,
        "coalesce": True,
        "misfire_grace_time": None,
        "next_run_time": datetime.now(UTC) + timedelta(seconds=first_in),
    }


class _SkippedRunFilter(logging.Filter):
    """A worker tick that finds the previous one still busy is normal, not a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_FIRST_PID_NAMESPACE = 0xEFFFFFFC  # the inode of Linux's initial PID namespace


def this_host() -> str:
    """This host as a job lease names it: its hostname, and in a container its PID namespace
    too (`node-1/4026532451`). Containers may share a hostname (host networking, a `hostname:`
    setting), but a process id means something only within its namespace: without it, a
    listener starting in one took the live jobs of a worker in another for a dead process's."""
    hostname = socket.gethostname()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux
        return hostname
    return hostname if namespace == _FIRST_PID_NAMESPACE else f"{hostname}/{namespace}"


def _gone_from_here(lease_owner: str) -> bool:
    """Whether a job lease (`host:pid:...`, `JobRunner`'s) is held by a process of this host
    (and PID namespace) that no longer runs. A process of another host or container, or whose
    pid runs again (another process may have it now), is left to its lease's expiry."""
    host, _, rest = lease_owner.partition(":")
    pid = rest.partition(":")[0]
    if host != this_host() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return _ended(int(pid))


def _ended(pid: int) -> bool:
    """Whether `pid` has ended though its parent has not yet collected it (a zombie: a
    worker killed by a parent that restarts it before it waits for it, which left its job to
    wait out the whole lease). Linux's /proc; elsewhere, False."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]  # after the command name, which may hold ")"
    return state in (["Z"], ["X"])


class Node:
    """One dicomnode process; `start()` returns once it runs; `stop()` drains and closes.

    `dicomnode serve` (`listen=True`) locks data_dir, receives, turns complete series into jobs,
    logs admin actions and purges the spool; `dicomnode worker` (`listen=False`) does none of
    that. Both reap lapsed leases, serve [http] when enabled, and run the job runners their
    settings ask for: a router for the originals jobs (`worker.router`) and `worker.workers`
    enhancement workers for the derived jobs. Several processes may share one PostgreSQL
    database and one spool (README, Scale-out); every tick is safe to run in each.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        listen: bool = True,
        log_setup: Callable[[], None] | None = None,
    ) -> None:
        """`log_setup` (picklable) configures logging in the receiver processes. Raises
        ConfigError for settings that could never run a job (`_check_ready`), before anything
        is made in the data_dir."""
        self.settings = settings
        self.listen = listen
        self.log_setup = log_setup
        # Before the data_dir, spool and database are made: a start refused for its settings
        # must leave no stray pair behind (on an unmounted data disk, say).
        self._check_ready(self._planned_runners())
        data_path = settings.node.data_path
        try:
            data_path.mkdir(parents=True, exist_ok=True)
            self.spool = Spool(data_path / "spool")
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and exc.filename != str(data_path) else ""
            raise ConfigError(
                f"setting node.data_dir: cannot create {data_path}{where}: {exc.strerror or exc}"
            ) from None
        self.db: Database = open_database(settings.node.effective_database_url)
        self._server: ThreadedAssociationServer | None = None
        self._receivers: ReceiverProcesses | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._clock_watch: ClockStepWatch | None = None
        self._http: HttpEndpoint | None = None
        self._deliveries = DeliveryQueues(settings, self.db)
        self._models = ModelLoading(settings, meanwhile=self._while_models_wait())
        self._database_health = DatabaseHealth()  # one line when it goes, one when it is back
        self._lock: DataDirLock | None = None
        self._identity: str | None = None  # the spool's, once start claimed it
        self._started = False
        self._heap_settled = False
        self._runners: list[JobRunner] = []
        self._runner_ticks: list[tuple[str, JobRunner]] = []  # (scheduler job id, runner)
        self._stopping = threading.Event()  # runners take no new job once it is set
        # Held by a tick while it changes the scheduler's plan, and by `stop` to set _stopping:
        # the scheduler's shutdown holds its job lock while it waits for running ticks, so a
        # tick that called it then would wait for ever (and `stop` with it).
        self._replanning = threading.Lock()

    def _planned_runners(self) -> list[tuple[str, JobPart]]:
        """The runners of this process: one router for the originals (it only hands series to
        the delivery queues, so it is never busy for long) and `workers` workers for the
        enhancement, so the originals of a series never wait for another series' enhancement."""
        workers = self.settings.worker
        runners = [("router", JobPart.ORIGINALS)] if workers.router else []
        return runners + [(f"w{index}", JobPart.DERIVED) for index in range(workers.workers)]

    def _parts_sent(self) -> list[JobPart]:
        """The jobs each complete series gets (`Settings.parts_sent`)."""
        return [JobPart(part) for part in self.settings.parts_sent()]

    def _makes_derived(self) -> bool:
        """Whether this node's series get a derived job that some destination takes: else
        nothing is enhanced, and no model needs to be there or to load."""
        return JobPart.DERIVED in self._parts_sent()

    def _enhancers_carry_series(self) -> bool:
        """Whether the derived jobs are what takes a series to the PACS, the originals
        switched off and `forward_unenhanced` on: a series whose enhancement fails then goes as
        received, so with models that do not load the enhancement workers still run."""
        enhance = self.settings.enhance
        return not enhance.forward_originals and enhance.forward_unenhanced

    def _while_models_wait(self) -> str:
        """What happens to the series while the models do not load (`ModelLoading`)."""
        if not self.listen and not self.settings.worker.router:
            return "derived jobs wait queued"  # a worker of enhancement only
        if self.settings.enhance.forward_originals:
            return "the originals are still forwarded, derived jobs wait queued"
        if self._enhancers_carry_series():
            return (
                "each series goes as received meanwhile (enhance.forward_originals = false, "
                "forward_unenhanced = true)"
            )
        return (
            "derived jobs wait queued and NOTHING is forwarded meanwhile "
            "(enhance.forward_originals = false, forward_unenhanced = false)"
        )

    def _load_models_again(self, prefix: str, enhancers: list[tuple[str, JobPart]]) -> None:
        """The models tick, while they do not load: once they do, the tick ends and the
        enhancement workers start (unless they run already: `_enhancers_carry_series`)."""
        if not self._tell_jobs(self._models.load(), prefix):
            return
        # Under the lock, as every tick that changes the plan: `stop` sets _stopping under it
        # before the scheduler's shutdown, which holds the scheduler's own lock while it waits
        # for this tick, so the tick must not reach for that lock once the shutdown began.
        with self._replanning:
            scheduler = self._scheduler
            if scheduler is None or self._stopping.is_set():
                return
            scheduler.remove_job(MODELS_TICK)
            if not self._enhancers_carry_series():
                self._add_runners(scheduler, prefix, enhancers)

    def _tell_jobs(self, loaded: bool, prefix: str) -> bool:
        """After a try of the models (`loaded`, returned): the queued derived jobs say why they
        wait, or no longer (`db.models_wait`), so `dicomnode jobs` shows what the log says.
        Not while the enhancement carries the series (they run meanwhile, without it)."""
        if loaded:
            self._note_jobs(clear_models_wait)
        elif not self._enhancers_carry_series():
            why = f"{prefix} cannot: {self._models.problem}; tried again every {RETRY_SECONDS:g} s"
            self._note_jobs(partial(note_models_wait, why=why))
        return loaded

    def _note_jobs(self, write: Callable[[Database], object]) -> None:
        """`write` the jobs' note; a database that is away is said by the ticks that need it,
        and the next try of the models writes it again."""
        try:
            write(self.db)
        except Exception as exc:
            said = database_away(exc)
            if said is None:
                raise
            log.debug("derived jobs not told why they wait, for now: %s", said)

    def _reclaim_expired_leases(self) -> object:
        """Queue again the jobs whose workers stopped renewing their leases, unless the
        database was away within a lease for a third of one or more (workers renew every third:
        a shorter outage costs them one renewal at most), when no worker could renew. Reclaimed
        as the database came back, a live worker's job was sent twice and recorded as one whose
        worker stopped (three such outages made it dead); a worker that did die meanwhile is
        reclaimed a lease later."""
        lease = self.settings.worker.lease_seconds
        if self._database_health.outage_within(lease, lasting=lease / 3):
            return DATABASE_NOT_ASKED
        return reclaim_expired_leases(self.db, self.settings.retry.max_attempts)

    def _check_ready(self, runners: list[tuple[str, JobPart]]) -> None:
        """Refuse to start (ConfigError), before anything is made in the data_dir, what could
        never run its jobs: a missing model, a bad TLS file, a worker with nothing to run, a
        data_dir another listener holds, a port another program listens on."""
        if not self.listen and not runners:
            raise ConfigError(
                "setting worker.workers: 0 and worker.router = false leave `dicomnode worker` "
                "nothing to do; set worker.workers >= 1 or worker.router = true"
            )
        check_files(self.settings, listener=self.listen, forwarding=bool(runners))
        # The lock and the port: looked at here, taken in `start` (one taken between the two is
        # refused there, with the same line).
        if self.listen:
            node = self.settings.node
            refuse_if_held(node.data_path, shared=node.shared_data_dir)  # names the other node
            try:
                check_port_free((node.host, node.port))
            except OSError as exc:
                raise _cannot_listen(node, exc) from None
        if self.settings.http.enabled:
            check_http_port_free(self.settings.http)

    def start(self, stop_requested: Callable[[], bool] = lambda: False) -> None:
        """Check what would make every job fail, listen, load the models, start the workers.

        Raises ConfigError (the CLI's exit 2) for a data_dir another listener holds or a port
        taken since the constructor probed it (what the settings alone refuse, the constructor
        did). Models that fail to load then do not stop it: `ModelLoading` says why and tries
        them again while the originals go. Once `stop_requested` (a signal came while it
        started: `stop` follows), the models are not loaded and no enhancement worker starts:
        a derived job taken up then would only be given back, minutes later.
        """
        node = self.settings.node
        runners = self._planned_runners()
        _raise_open_file_limit()
        return_large_blocks()  # a large instance's memory goes back to the system
        if self.listen:  # workers share the spool with its listeners: they take no lock
            self._lock = lock_data_dir(node.data_path, shared=node.shared_data_dir)
        self._identity = claim_both(self.db, self.spool)  # this spool and database: one pair
        if self.settings.http.enabled:  # first: /healthz answers while the rest starts
            listener_up = self.listening if self.listen else None  # a worker: DB and disk
            self._http = start_http_endpoint(self.settings, self.db, self.spool, listener_up)
        if self.listen:
            self._warn_about_destinations()
            self._warn_about_free_space()
            self._warn_about_memory()
            self._start_listeners()
        # Jobs a process on this host held when it was killed or forced to stop: queued again
        # now, not after worker.lease_seconds.
        reclaim_expired_leases(self.db, self.settings.retry.max_attempts, gone=_gone_from_here)
        destinations = [d.name for d in self.settings.destinations]
        scheduler = self._scheduler = self._scheduler_with_upkeep(destinations, bool(runners))
        prefix = f"{this_host()}:{os.getpid()}"
        routers = [(name, part) for name, part in runners if part == JobPart.ORIGINALS]
        with self._replanning:
            self._add_runners(scheduler, prefix, routers)
        # The receiver already answers, and the router sends the originals, while TensorFlow
        # loads (seconds); what arrives meanwhile is on disk and in the database, and its
        # derived jobs wait for the workers. A process without workers never needs the models.
        scheduler.start()
        self._clock_watch = ClockStepWatch(self._after_clock_step).start()
        workers = self.settings.worker
        enhancers = [r for r in runners if r not in routers]
        # Without a destination for derived series the workers only close the derived jobs
        # made before (nothing made, nothing sent): no model is needed, none is loaded.
        loads = bool(enhancers) and self._makes_derived() and not stop_requested()
        if loads and not self._tell_jobs(self._models.load(), prefix):  # said why; tried again
            scheduler.add_job(
                # Not guarded by the node's database health: its note on the queued jobs is
                # no news of the database (`_tell_jobs`).
                Guarded(MODELS_TICK, partial(self._load_models_again, prefix, enhancers)),
                seconds=RETRY_SECONDS,
                **_every(MODELS_TICK, first_in=RETRY_SECONDS),  # again until they load
            )
            if not self._enhancers_carry_series():
                enhancers = []  # they start once the models load
        heap.settle()  # what start-up loaded stays: a full collection need not walk it
        self._heap_settled = True
        if stop_requested():  # meanwhile (the models take seconds)
            log.info("a stop was asked for while starting: no enhancement worker starts")
            enhancers = []
        with self._replanning:
            self._add_runners(scheduler, prefix, enhancers)
        if self.listen:
            log.info(
                "node started ae_title=%s port=%d data_dir=%s destinations=%s workers=%d "
                "utc_offset=%s",
                node.ae_title,
                node.port,
                node.data_path,
                ",".join(destinations) or "(none)",
                workers.workers,
                _local_utc_offset(),
            )
        else:
            log.info(
                "worker started id=%s data_dir=%s database=%s destinations=%s workers=%d router=%s "
                "utc_offset=%s",
                prefix,
                node.data_path,
                masked_url(self.db.url),
                ",".join(destinations) or "(none)",
                workers.workers,
                workers.router,
                _local_utc_offset(),
            )
        self._started = True
        for destination, reason in unresolvable_hosts(self.settings.destinations):
            log.warning(
                "destination %s: host %s does not resolve (%s); its deliveries fail and are "
                "retried until it does",
                destination.name,
                destination.host,
                reason,
            )

    def _scheduler_with_upkeep(
        self, destinations: list[str], runs_jobs: bool
    ) -> BackgroundScheduler:
        """The scheduler with every tick but the runners': making jobs of complete series,
        reclaiming lapsed leases, asking destinations failed jobs wait for whether they are
        back (where jobs run), the admin log and retention (the last two in listeners)."""
        workers = self.settings.worker
        # A thread per tick, so that none waits for another (a purge, a probe of a PACS that
        # hangs): the workers' and the router's, completion, reaper, probe, admin log, retention,
        # and the models' while they do not load.
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(workers.workers + 7)}, timezone=UTC
        )
        logging.getLogger("apscheduler.scheduler").addFilter(_SkippedRunFilter())
        completion = self.settings.completion
        quiet = completion.series_quiet_seconds
        parts = self._parts_sent()
        if self.listen:  # the processes that receive make the jobs and own the spool's upkeep
            scheduler.add_job(
                Guarded(
                    "completion",
                    lambda: self._complete_series(destinations, parts),
                    self._database_health,
                ),
                seconds=min(workers.poll_seconds, quiet, completion.release_quiet_seconds or quiet),
                **_every(COMPLETION_TICK),
            )
        scheduler.add_job(
            Guarded(REAPER_TICK, self._reclaim_expired_leases, self._database_health),
            seconds=max(1.0, workers.lease_seconds / 3),
            **_every(REAPER_TICK),
        )
        retry = self.settings.retry
        if runs_jobs and destinations and retry.probe_seconds:
            watch = RecoveryWatch(min_interval_seconds=retry.max_delay_seconds)
            scheduler.add_job(
                Guarded(
                    RECOVERY_TICK,
                    lambda: probe_destinations(self.settings, self.db, watch, self._stopping),
                    self._database_health,
                ),
                seconds=retry.probe_seconds,
                **_every(RECOVERY_TICK),
            )
        if self.listen:
            # Admin actions (`dicomnode jobs ...`) appear in the listeners' log, each once.
            scheduler.add_job(
                Guarded("admin-log", lambda: log_admin_actions(self.db), self._database_health),
                seconds=max(1.0, workers.poll_seconds),
                **_every("admin-log"),
            )
            scheduler.add_job(
                Guarded(
                    "retention",
                    lambda: purge_delivered(
                        self.settings, self.db, self.spool, stopping=self._stopping
                    ),
                    self._database_health,
                ),
                seconds=self.settings.retention.check_seconds,
                **_every("retention"),
            )
        return scheduler

    def _add_runners(
        self, scheduler: BackgroundScheduler, prefix: str, planned: Sequence[tuple[str, JobPart]]
    ) -> None:
        """A runner and its tick (every worker.poll_seconds, from now) for each planned one.
        The caller holds `_replanning` (the completion tick reads `_runner_ticks` under it)."""
        for name, part in planned:
            runner = JobRunner(
                self.settings,
                self.db,
                self.spool,
                f"{prefix}:{name}",
                self._deliveries,
                part,
                stopping=self._stopping,
            )
            self._runners.append(runner)
            self._runner_ticks.append((name, runner))  # the completion tick wakes these
            scheduler.add_job(
                Guarded(name, runner.run_due_jobs, self._database_health),
                seconds=self.settings.worker.poll_seconds,
                **_every(name),
            )

    def _complete_series(self, destinations: list[str], parts: Sequence[JobPart]) -> None:
        """The completion tick: complete series become jobs, and this process's runners are
        told at once rather than at their next poll; the tick then comes back when the next
        pending series is due (a sender's release + `release_quiet_seconds`), not up to a
        round later. Both only save waiting: every tick still finds what is due."""
        completion = self.settings.completion
        quiet, release_quiet = completion.series_quiet_seconds, completion.release_quiet_seconds
        created = create_jobs_for_quiet_series(
            self.db, quiet, destinations, parts, release_quiet, takes=self.settings.sends()
        )
        due_in = seconds_to_next_completion(self.db, quiet, release_quiet)
        self._plan_next_completion(created, due_in)
        if created:  # what a database restored from an older copy would lack
            self._count_generation()

    def _count_generation(self) -> None:
        """One more round that made jobs (`spool_identity.advance_generation`). A failure costs
        this round's count (detection of a restored copy a round later), never the tick."""
        try:
            advance_generation(self.db, self.spool)
        except Exception as exc:  # the spool's disk full, the database locked meanwhile
            _generation_failures.warning(
                "generation", "generation not counted this round: %s", first_line(exc)
            )

    def _plan_next_completion(self, created: Sequence[int], due_in: float | None) -> None:
        """Wake this process's runners for the jobs just made, and bring the completion tick
        forward to the next pending series' due time."""
        with self._replanning:
            scheduler = self._scheduler
            if scheduler is None or self._stopping.is_set():
                return
            now = datetime.now(UTC)
            if created:
                for tick_id, runner in self._runner_ticks:
                    runner.wake()  # a tick under way looks again; an idle one runs now
                    scheduler.modify_job(tick_id, next_run_time=now)
            tick = scheduler.get_job(COMPLETION_TICK)
            # Due already (another process is taking it): the tick's round will look again.
            if due_in is None or due_in <= 0 or tick is None or tick.next_run_time is None:
                return
            due = now + timedelta(seconds=due_in) + COMPLETION_MARGIN
            if due < tick.next_run_time:
                tick.modify(next_run_time=due)

    def _after_clock_step(self, seconds: float) -> None:
        """After the system clock stepped `seconds`: every lease this process keeps is renewed
        (after a step forward it may look lapsed); on SQLite, whose clock is this host's, after
        a step back what was stamped before it comes back to now; then every tick runs now
        (after a step back it would wait as long as the step), the reaper only once every live
        worker on the host has renewed its lease on the new time."""
        renew_every_lease_now()
        if self.db.is_sqlite and seconds <= -PULL_BACK_AFTER_SECONDS:
            pulled = pull_back_future_times(self.db, self.settings.worker.lease_seconds)
            log.info("times stamped before the clock step brought back to now rows=%d", pulled)
        reap_in = self.settings.worker.lease_seconds / 3 + CHECK_SECONDS
        with self._replanning:
            if self._scheduler is not None and not self._stopping.is_set():
                run_every_tick_now(self._scheduler, later={REAPER_TICK: reap_in})

    def _refuse_a_moved_spool(self) -> None:
        """Refuse to start when the database names its files in another folder, where they are
        (copied) or whence they came to this one (moved by hand): every job would read, or miss,
        the old folder's files, and the newest rows would be taken for a power loss's."""
        newest = newest_path(self.db)
        instances = self.spool.instances_dir
        if newest is None or instances in newest.parents:
            return
        here = instances.joinpath(*newest.parts[-3:])  # its place in this spool's layout
        if not newest.is_file() and not here.is_file():
            return  # lost, not moved: forgotten below (a power loss), or doctor says "missing"
        raise ConfigError(
            f"setting node.data_dir: the database names its spool files in another folder "
            f"(the newest: {newest}), not in {instances}: was the data folder moved? Run "
            "`dicomnode doctor --repair` (it points the rows at the files where they are now), "
            "then start again"
        )

    def _start_listeners(self) -> None:
        """Listen here, plus node.listener_processes - 1 receiver processes on the same port."""
        node = self.settings.node
        self._refuse_a_moved_spool()
        for sop_uid, series_uid in forget_instances_without_files(self.db):
            log.warning(
                "instance forgotten: its spool file is missing (a crash while it was stored: its "
                "sender was not told Success and sends it again) sop=%s series=%s",
                sop_uid,
                series_uid,
            )
        processes = node.listener_process_count
        try:
            if processes > 1:  # SO_REUSEPORT would let another node share the port silently
                check_port_free((node.host, node.port))
            self._server = start_receiver(
                self.settings, self.spool, self.db, shared_port=processes > 1
            )
        except OSError as exc:
            raise _cannot_listen(node, exc) from None
        if processes > 1:
            self._receivers = ReceiverProcesses(
                self.settings, processes - 1, self.log_setup, self._identity
            )
            self._receivers.start()
            log.info(
                "listener processes=%d (node.listener_processes) port=%d", processes, node.port
            )

    def _warn_about_destinations(self) -> None:
        if self.settings.destinations:
            if self.settings.enhance.methods and not self._makes_derived():
                log.warning(
                    "no destination takes derived series (destinations[].send): series are "
                    "not enhanced and no model is loaded; set enhance.methods = [] to say so, "
                    'or add "derived" to a destination\'s send'
                )
            return
        if self.settings.node.receive_only:
            log.info(
                "receive only (node.receive_only = true): series are kept, sent nowhere, and "
                "purged after retention.keep_days"
            )
            return
        log.warning(
            "NO DESTINATIONS configured: received series are kept and sent nowhere; their jobs "
            "end 'stored', which retention never purges. Add [[destinations]] (or "
            "DICOMNODE_DESTINATIONS), or set node.receive_only = true if that is the intent"
        )

    def _warn_about_free_space(self) -> None:
        """Say at start, not at the first refused store, that stores will be refused."""
        minimum = self.settings.node.min_free_disk_mb
        free_mb = self.spool.free_bytes() // (1024 * 1024)
        if free_mb < minimum:
            log.warning(
                "LOW DISK: %d MB free in %s, below node.min_free_disk_mb=%d: every C-STORE is "
                "refused (0xA700) until space is freed (`dicomnode purge`, `doctor`)",
                free_mb,
                self.spool.root,
                minimum,
            )

    def _warn_about_memory(self) -> None:
        """Say at start, not at the OOM killer, that callers could take more than there is."""
        said = memory_warning(self.settings.node, host_memory())
        if said is not None:
            log.warning("MEMORY: %s", said)

    def listening(self) -> bool:
        """Whether the DICOM listener is up (for /readyz)."""
        server = self._server
        return server is not None and server.socket.fileno() != -1

    def in_progress(self) -> tuple[int, int]:
        """(associations receiving, jobs being processed or forwarded) by this process now."""
        server = self._server
        associations = len(server.active_associations) if server is not None else 0
        if self._receivers is not None:
            associations += self._receivers.associations()
        jobs = sum(runner.current_job is not None for runner in self._runners)
        jobs += sum(self._deliveries.jobs_in_flight(part) for part in JobPart)
        return associations, jobs

    def kill_receivers(self) -> None:
        """A forced exit: end the receiver processes now, so none outlives the node."""
        if self._receivers is not None:
            self._receivers.kill()

    def stop(self) -> None:
        """Stop accepting associations and taking jobs; let the associations, running jobs and
        deliveries in progress finish (deliveries not yet started are queued again for the next
        start); close the database. `dicomnode serve` bounds the wait (node.stop_timeout_seconds).
        """
        with self._replanning:  # from here on no tick touches the scheduler
            self._stopping.set()
        self._deliveries.close()  # jobs waiting in a delivery queue go back now
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._receivers is not None:
            self._receivers.stop()  # they finish their associations while this one does
        if self._server is not None:
            self._server.shutdown()
            # No handler may run once the process exits: a store answered Success after the
            # interpreter began to shut down would be a lie (and a traceback in the log).
            while self._server.active_associations:
                time.sleep(0.1)
            self._server = None
        if self._receivers is not None:
            self._receivers.join()
            self._receivers = None
        if self._clock_watch is not None:
            self._clock_watch.stop()
            self._clock_watch = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self._deliveries.shutdown()
        if self._models.problem is not None:  # no longer tried here: its note would stay
            self._note_jobs(clear_models_wait)
        self.db.dispose()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._heap_settled:
            heap.unsettle()
            self._heap_settled = False
        if self._started:
            log.info("%s stopped", "node" if self.listen else "worker")
            self._started = False
