"""The supervisor: forks WORKERS processes and keeps that many alive (gunicorn's arbiter is the model).

Signal handlers only enqueue the signal and wake the main loop through a pipe. The loop dispatches
queued signals to `handle_<name>` methods, reaps children (reporting exit codes and signals, with an
out-of-memory hint for SIGKILL), restarts dead workers with jittered exponential backoff, and gives
up with a non-zero exit when workers crash-loop or cannot boot, so PM2/systemd can act.

A crash loop is workers dying before they get into service: only a worker that dies before settling
its first batch (and within RESTART_WINDOW of its start) counts toward RESTART_LIMIT. A worker killed
after useful work (an OOM kill, an operator's `kill -9`) is restarted with backoff however often.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import random
import select
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from setproctitle import setproctitle

from workerpool.config import Settings
from workerpool.exit_codes import (
    EXIT_CRASH_LOOP,
    EXIT_FORCED,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    WORKER_EXIT_BOOT_ERROR,
    WORKER_EXIT_CRASH,
    WORKER_EXIT_OK,
)
from workerpool.observability import health, metrics
from workerpool.process import drain, liveness
from workerpool.process.worker import Worker

log = logging.getLogger(__name__)

BOOT_FAILURE_LIMIT = 3  # consecutive boot errors (bad DSN, missing schema) before giving up
RESTART_BACKOFF_BASE_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0

SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGTTIN, signal.SIGTTOU]
SIG_NAMES = {getattr(signal, n): n[3:].lower() for n in dir(signal) if n.startswith("SIG") and "_" not in n}


@dataclass
class Child:
    pid: int
    number: int
    started: float
    slot: liveness.Slot
    timed_out: bool = False  # killed for a silent heartbeat (WORKER_TIMEOUT)


class Supervisor:
    """Runs and watches the worker processes of one `workerpool run`."""

    def __init__(
        self,
        settings: Settings,
        drain: bool = False,
        worker_main: Callable[[Settings, int, int, bool], int] | None = None,
    ) -> None:
        self.settings = settings
        self.drain = drain
        self.worker_main = worker_main or run_worker
        self.target = settings.workers
        self.children: dict[int, Child] = {}
        self.signal_queue: deque[int] = deque()
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_code = EXIT_OK
        self.started_at = datetime.datetime.now(datetime.UTC)  # the database's clock once `--drain` runs
        self.crashes: deque[float] = deque()  # deaths before getting into service: RESTART_LIMIT counts these
        self.deaths: deque[float] = deque()  # every death, in service or not: the restart backoff grows with these
        self.boot_failures = 0
        self.consecutive_failures = 0
        self.next_spawn_at = 0.0
        self.finished: set[int] = set()  # worker numbers that ended cleanly in drain mode
        self._pipe_r = self._pipe_w = -1

    # ---- signals ---------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._pipe_r, self._pipe_w = os.pipe()
        for fd in (self._pipe_r, self._pipe_w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only enqueue and wake the loop: no logging, no killing in here.
        if signum != signal.SIGCHLD:
            self.signal_queue.append(signum)
        try:
            os.write(self._pipe_w, b".")
        except OSError:
            pass

    def handle_term(self) -> None:
        self._begin_stop("sigterm")

    def handle_int(self) -> None:
        self._begin_stop("sigint")

    def handle_hup(self) -> None:
        """Restart every worker gracefully (e.g. after a deploy), one signal for all."""
        log.info("reloading workers", extra={"action": "reload"})
        for child in list(self.children.values()):
            self._kill(child.pid, signal.SIGTERM)

    def handle_ttin(self) -> None:
        self.target += 1
        log.info("worker count raised", extra={"action": "workers_changed", "workers": self.target})

    def handle_ttou(self) -> None:
        if self.target > 1:
            self.target -= 1
            log.info("worker count lowered", extra={"action": "workers_changed", "workers": self.target})

    def _begin_stop(self, reason: str) -> None:
        if self.stopping:
            log.warning("second stop signal: killing workers now", extra={"action": "forced_stop", "signal": reason})
            for child in list(self.children.values()):
                self._kill(child.pid, signal.SIGKILL)
            self.exit_code = EXIT_FORCED
            self.stop_deadline = 0.0
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.settings.shutdown_timeout / 1000.0
        log.info(
            "stopping gracefully",
            extra={"action": "stopping", "signal": reason, "shutdown_timeout_ms": self.settings.shutdown_timeout},
        )
        for child in list(self.children.values()):
            self._kill(child.pid, signal.SIGTERM)

    # ---- main loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the exit code for the process."""
        # The title replaces argv in `ps`: a --database-url with a password never shows there.
        setproctitle(f"workerpool: supervisor (workers={self.target})")
        if self.drain:
            self.started_at = drain.database_now(self.settings)
        self._install_signals()
        self._health = health.start(self.settings)  # None unless HEALTH_PORT is set; before the first fork
        self._publish()
        log.info(
            "supervisor started",
            extra={"action": "supervisor_started", "workers": self.target, "batch_size": self.settings.batch_size},
        )
        try:
            while True:
                while self.signal_queue:
                    signum = self.signal_queue.popleft()
                    getattr(self, f"handle_{SIG_NAMES.get(signum, 'unknown')}", lambda: None)()
                self._reap()
                if self.stopping:
                    if not self.children:
                        break
                    if time.monotonic() >= self.stop_deadline:
                        self._kill_stragglers()
                elif self.exit_code != EXIT_OK:
                    self._begin_stop("give_up")
                    continue
                elif self.drain and len(self.finished) >= self.target and not self.children:
                    failed = drain.rows_failed(self.settings, self.started_at)
                    self.exit_code = EXIT_OK if failed == 0 else EXIT_ROWS_FAILED
                    break
                else:
                    self._kill_silent()
                    self._manage_workers()
                self._publish()
                self._sleep(1.0)
        finally:
            for child in list(self.children.values()):
                self._kill(child.pid, signal.SIGKILL)
            self._reap(block=True)
            health.stop(self._health)
        log.info("supervisor stopped", extra={"action": "supervisor_stopped", "exit_code": self.exit_code})
        return self.exit_code

    def _publish(self) -> None:
        """Tell the health server (its own thread) about the workers as they are now."""
        if self._health is not None:
            pids = tuple(c.pid for c in self.children.values())
            self._health.publish(health.Pool(pids, self.target, self.stopping))

    def _sleep(self, timeout: float) -> None:
        if self.stopping:
            timeout = min(timeout, max(0.05, self.stop_deadline - time.monotonic()))
        elif self.next_spawn_at:
            timeout = min(timeout, max(0.05, self.next_spawn_at - time.monotonic()))
        try:
            ready, _, _ = select.select([self._pipe_r], [], [], timeout)
            if ready:
                while os.read(self._pipe_r, 4096):
                    pass
        except (OSError, InterruptedError) as exc:
            if getattr(exc, "errno", None) not in (errno.EAGAIN, errno.EINTR, None):
                raise

    def _manage_workers(self) -> None:
        """Top the pool up to the target, respecting restart backoff; trim it when lowered."""
        while len(self.children) > self.target:
            newest = max(self.children.values(), key=lambda c: c.started)
            self._kill(newest.pid, signal.SIGTERM)
            break
        if time.monotonic() < self.next_spawn_at:
            return
        self.next_spawn_at = 0.0  # the backoff has passed; sleep normally again
        busy = {c.number for c in self.children.values()} | self.finished
        for number in range(1, self.target + 1):
            if number not in busy:
                self._spawn(number)

    def _spawn(self, number: int) -> None:
        # Block signals across fork so the child never runs the supervisor's handlers.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        sys.stdout.flush()
        sys.stderr.flush()
        slot = liveness.Slot()
        pid = os.fork()
        if pid == 0:
            code = WORKER_EXIT_OK
            try:
                for sig in SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                os.close(self._pipe_r)
                os.close(self._pipe_w)
                for other in self.children.values():
                    other.slot.close()
                liveness.adopt(slot)
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
                code = self.worker_main(self.settings, number, os.getppid(), self.drain)
            except BaseException:
                log.exception("worker crashed", extra={"action": "worker_crashed", "worker": number})
                code = WORKER_EXIT_CRASH
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.children[pid] = Child(pid, number, time.monotonic(), slot)
        log.info("worker spawned", extra={"action": "worker_spawned", "worker": number, "worker_pid": pid})

    def _reap(self, block: bool = False) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._on_exit(child, status)

    def _on_exit(self, child: Child, status: int) -> None:
        metrics.process_dead(child.pid)
        uptime = time.monotonic() - child.started
        in_service = child.slot.marked or uptime > self.settings.restart_window / 1000.0
        child.slot.close()
        fields: dict[str, object] = {
            "worker": child.number,
            "worker_pid": child.pid,
            "uptime_s": round(uptime, 1),
            "in_service": in_service,
        }
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            fields["signal"] = signal.Signals(sig).name
            message = "worker killed by signal"
            if sig == signal.SIGKILL and not self.stopping:
                message += " (SIGKILL: perhaps out of memory)"
            code = -sig
        else:
            code = os.WEXITSTATUS(status)
            fields["exit_code"] = code
            message = "worker exited"
        if self.stopping:
            log.info(message, extra={"action": "worker_exited", **fields})
            return
        if code == WORKER_EXIT_OK:
            log.info(message, extra={"action": "worker_exited", **fields})
            if self.drain:
                self.finished.add(child.number)
            return

        log.error(message, extra={"action": "worker_died", **fields})
        now = time.monotonic()
        if code == WORKER_EXIT_BOOT_ERROR:
            self.boot_failures += 1
            if self.boot_failures >= BOOT_FAILURE_LIMIT:
                log.error(
                    f"workers failed to boot {self.boot_failures} times in a row; giving up",
                    extra={"action": "gave_up", "reason": "boot_error"},
                )
                self.exit_code = EXIT_CRASH_LOOP
                return
        else:
            self.boot_failures = 0
        window = self.settings.restart_window / 1000.0
        if not in_service:
            self.crashes.append(now)
        self.deaths.append(now)
        for times in (self.crashes, self.deaths):
            while times and now - times[0] > window:
                times.popleft()
        if len(self.crashes) >= self.settings.restart_limit:
            log.error(
                f"{len(self.crashes)} workers died before settling a batch within {window:.0f}s "
                "(RESTART_LIMIT); giving up",
                extra={"action": "gave_up", "reason": "crash_loop"},
            )
            self.exit_code = EXIT_CRASH_LOOP
            return
        self.consecutive_failures = len(self.deaths)
        delay = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_BASE_S * 2 ** (self.consecutive_failures - 1))
        delay *= random.uniform(0.5, 1.0)
        self.next_spawn_at = now + delay
        metrics.record_restart()
        log.info(
            "restarting worker",
            extra={"action": "worker_restart_scheduled", "worker": child.number, "delay_s": round(delay, 2)},
        )

    def _kill_silent(self) -> None:
        """Kill a worker whose claim loop has not turned for WORKER_TIMEOUT (a transform that will not
        return, a call that never ends): its claims return by lease, and it is replaced like any
        worker that died in service (gunicorn's worker timeout)."""
        limit = self.settings.worker_timeout / 1000.0
        for child in list(self.children.values()):
            silent = child.slot.silent_for
            if silent > limit and not child.timed_out:
                child.timed_out = True
                metrics.record_worker_timeout()
                log.error(
                    f"worker {child.number} has not turned its loop for {silent:.0f}s "
                    f"(WORKER_TIMEOUT={self.settings.worker_timeout} ms); killing it, its claims return by lease",
                    extra={
                        "action": "worker_timed_out",
                        "worker": child.number,
                        "worker_pid": child.pid,
                        "silent_s": round(silent, 1),
                    },
                )
                self._kill(child.pid, signal.SIGKILL)

    def _kill_stragglers(self) -> None:
        for child in list(self.children.values()):
            log.warning(
                "worker outlived SHUTDOWN_TIMEOUT; killing it",
                extra={"action": "worker_killed", "worker": child.number, "worker_pid": child.pid},
            )
            self._kill(child.pid, signal.SIGKILL)
        self.stop_deadline = time.monotonic() + 5.0

    @staticmethod
    def _kill(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def run_worker(settings: Settings, number: int, parent_pid: int, drain: bool) -> int:
    """The body of a forked worker process."""
    setproctitle(f"workerpool: worker {number}")
    worker = Worker(settings, number=number, parent_pid=parent_pid, drain=drain)
    worker.install_signal_handlers()
    return worker.run()
