"""`ntspki watch`: deploy each new version of a lineage as soon as it is complete.

The watcher follows every target's source directory (inotify through watchdog, or polling for NFS
and container volumes) and its parent (so a lineage that appears later, or is replaced, is seen).
certbot swaps four symlinks per renewal, unlinking each before re-creating it; ntspki renames one
link, live/NAME, to a new version directory (an event in the parent), and the watch on the source
directory itself moves to the directory it now names (`_dirs` keys watches by where they lead).
After the last event it waits `debounce` seconds and then until the lineage reads consistently
and the key matches the certificate, then runs the deploy engine for every target that is ready,
in one run (one restart). Invalid material is refused by the engine, logged, and skipped; the
watcher keeps going.

Signals only set flags (the main loop acts on them): SIGTERM/SIGINT stop, SIGHUP re-reads the
config. With systemd (Type=notify) it reports READY=1 after the first catch-up deploy.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ntspki import deploy as engine
from ntspki.deploy.deployconfig import Target
from ntspki.errors import NtspkiError

if TYPE_CHECKING:  # watchdog is heavy: imported only when a watcher starts
    from watchdog.observers.api import BaseObserver

log = logging.getLogger("ntspki.deploy.watch")

# How long a lineage may stay incomplete after a change before the engine is run anyway (and
# refuses it with the reason, logged).
SETTLE_LIMIT = 10.0
# Longest sleep of the main loop: how soon it notices a signal flag or a lineage still settling.
IDLE = 0.5


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; nothing without NOTIFY_SOCKET."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("cannot notify systemd: %s", e)


def _ready(target: Target) -> bool:
    """The lineage reads as one version and its key matches its certificate."""
    from ntspki.store import read_live_dir

    try:
        lineage = read_live_dir(target.source_dir, target.source)
    except NtspkiError:
        return False
    return engine.Pair(lineage.privkey, lineage.fullchain).matches()


class Watcher:
    def __init__(
        self,
        load_targets: Callable[[], list[Target]],
        lock_path: Path | None = None,
        poll: bool = False,
        poll_interval: float = 2.0,
        debounce: float = 0.2,
    ):
        self.load_targets = load_targets
        self.lock_path = lock_path
        self.poll, self.poll_interval, self.debounce = poll, poll_interval, debounce
        self.targets: list[Target] = []
        self.pending: dict[str, float] = {}  # target name -> first change seen (monotonic)
        self.last_event: dict[str, float] = {}  # target name -> last change seen
        self.mutex = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.reload_requested = False
        self.observer: BaseObserver | None = None
        self.watched: set[tuple[Path, str]] = set()

    # -- events -----------------------------------------------------------------------------
    def _on_event(self, event) -> None:
        paths = [getattr(event, "src_path", ""), getattr(event, "dest_path", "")]
        now = time.monotonic()
        hit = False
        with self.mutex:
            for t in self.targets:
                src = str(t.source_dir)
                if any(p and (p == src or p.startswith(src + os.sep)) for p in map(os.fsdecode, paths)):
                    self.pending.setdefault(t.name, now)
                    self.last_event[t.name] = now
                    hit = True
        if hit:
            self.wake.set()

    def _dirs(self) -> set[tuple[Path, str]]:
        """The source dirs and their parents that exist (a lineage may appear later), each with
        the directory it leads to (inotify watches that one: a new version directory needs a new watch)."""
        out = set()
        for t in self.targets:
            for d in (t.source_dir, t.source_dir.parent):
                if d.is_dir():
                    out.add((d, os.path.realpath(d)))
        return out

    def _schedule(self) -> None:
        from watchdog.events import FileSystemEventHandler

        dirs = self._dirs()
        if self.observer is not None and dirs == self.watched:
            return
        self._stop_observer()
        if self.poll:
            from watchdog.observers.polling import PollingObserver

            observer: BaseObserver = PollingObserver(timeout=self.poll_interval)
        else:
            from watchdog.observers import Observer

            observer = Observer()
        handler = FileSystemEventHandler()
        handler.on_any_event = self._on_event  # type: ignore[method-assign]
        for d in sorted({d for d, _ in dirs}):
            try:  # inotify on the directory live/NAME leads to, not on the link (watchdog >= 5)
                observer.schedule(handler, str(d), recursive=False, follow_symlink=True)
            except TypeError:
                observer.schedule(handler, str(d), recursive=False)
        observer.start()
        self.observer, self.watched = observer, dirs
        missing = [str(t.source_dir) for t in self.targets if not t.source_dir.is_dir()]
        log.info(
            "watching %d director%s (%s)%s",
            len(dirs),
            "y" if len(dirs) == 1 else "ies",
            "polling" if self.poll else "inotify",
            f"; waiting for {', '.join(missing)} to appear" if missing else "",
        )

    def _stop_observer(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None

    # -- control ----------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # Handlers only set flags (an Event.set here could deadlock): noticed within IDLE.
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_requested", True))

    def _load(self) -> None:
        targets = self.load_targets()
        with self.mutex:
            self.targets = targets
        log.info(
            "%d target%s: %s",
            len(targets),
            "" if len(targets) == 1 else "s",
            ", ".join(f"{t.name} <- {t.source_dir}" for t in targets) or "none",
        )
        self._schedule()

    def _deploy(self, targets: list[Target], why: str) -> None:
        if not targets:
            return
        log.info("deploying %s (%s)", ", ".join(t.name for t in targets), why)
        try:
            report = engine.deploy(targets, lock_path=self.lock_path)
        except (NtspkiError, OSError) as e:
            log.error("deploy failed: %s", e)
            return
        for r in report.targets:
            level = logging.INFO if r.exit_code == 0 else logging.ERROR
            log.log(level, "%s: %s: %s", r.name, r.status, r.message)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        self._install_signals()
        self._load()
        self._deploy(self.targets, "catching up on start")
        sd_notify("READY=1")
        next_rescan = time.monotonic() + 2.0
        try:
            while not self.stopping:
                self.wake.wait(self._sleep_for(time.monotonic()))
                self.wake.clear()
                if self.stopping:
                    break
                if self.reload_requested:
                    self.reload_requested = False
                    sd_notify("RELOADING=1")
                    log.info("SIGHUP: re-reading the config")
                    try:
                        self._load()
                        self._deploy(self.targets, "config re-read")
                    except NtspkiError as e:
                        log.error("config not reloaded, keeping the old one: %s", e)
                    sd_notify("READY=1")
                now = time.monotonic()
                if now >= next_rescan or self.pending:
                    # A source (or its parent) that did not exist may have appeared, or a source
                    # now leads to another directory (a switched lineage).
                    next_rescan = now + 2.0
                    before = self.watched
                    if self._dirs() != before:
                        self._schedule()
                        changed = {d for d, _ in self.watched ^ before}
                        with self.mutex:
                            for t in self.targets:
                                if t.source_dir in changed or t.source_dir.parent in changed:
                                    self.pending.setdefault(t.name, now)
                                    self.last_event[t.name] = now
                self._deploy(self._due(now), "source changed")
        finally:
            sd_notify("STOPPING=1")
            self._stop_observer()
            log.info("stopped")

    def _sleep_for(self, now: float) -> float:
        """Until the next debounce expires (the watchdog thread wakes us for new events)."""
        with self.mutex:
            ends = [self.last_event[n] + self.debounce - now for n in self.pending]
        # Past its debounce but still incomplete (mid-renewal): look again every 50 ms.
        return min([IDLE, *[e if e > 0 else 0.05 for e in ends]])

    def _due(self, now: float) -> list[Target]:
        """Targets whose source has been quiet for `debounce` and is complete (or never got so)."""
        due = []
        with self.mutex:
            by_name = {t.name: t for t in self.targets}
            for name in list(self.pending):
                t = by_name.get(name)
                if t is None:
                    self.pending.pop(name)
                    continue
                if now - self.last_event[name] < self.debounce:
                    continue
                if _ready(t):
                    due.append(t)
                elif now - self.pending[name] < SETTLE_LIMIT:
                    continue  # mid-renewal: wait for the rest of the links
                else:
                    log.warning("%s: %s stayed incomplete for %.0f s", name, t.source_dir, SETTLE_LIMIT)
                    due.append(t)  # the engine says exactly what is wrong, and refuses it
                self.pending.pop(name)
        return due
