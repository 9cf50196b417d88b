"""Issuing server certificates from the site CA into lineages (one or a whole fleet)."""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import signal
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from cryptography import x509

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.issuing import ca as ca_mod
from ntspki.pki import keys, names, verify
from ntspki.store import Home
from ntspki.store.identity import Identity, Issued, Request, keep_identity


def parse_batch(text: str, source: str = "batch file") -> list[Request]:
    """One `NAME [SAN ...]` a line; blank lines and `#` comments are ignored."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        req = Request(fields[0], fields[1:], f"{source} line {lineno}")
        try:
            _ = req.general_names  # validates every name
        except NtspkiError as e:
            raise NtspkiError(f"{req.origin}: {e}", 2)
        out.append(req)
    if not out:
        raise NtspkiError(f"{source} names no certificate to issue", 2)
    return out


MAX_DAYS = pki.MAX_DAYS


def _check_options(key_type: str | None, days: int | None) -> None:
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise NtspkiError(f"--days must be 1..{MAX_DAYS}", 2)
    if key_type is not None and key_type not in keys.KEY_TYPES:
        raise NtspkiError(f"unknown key type {key_type!r} (choose from {', '.join(keys.KEY_TYPES)})", 2)


@dataclass
class _Built:
    """A new certificate, validated and ready to write."""

    lineage: str
    key_pem: bytes
    cert_pem: bytes
    info: pki.CertInfo
    key_type: str
    days: int


def _build(ca: ca_mod.CA, req: Request, ident: Identity) -> _Built:
    lineage = req.lineage
    sans = names.unique_sans(ident.sans)
    days = ident.days or pki.LEAF_DAYS
    key = keys.generate(ident.key_type)
    cert = pki.make_leaf(key, ca.intermediate, ca.intermediate_key, sans, days)
    # Nothing is written unless the chain verifies for every name and the key is the cert's.
    verify.verify_chain(_anchors(ca.root), [cert, ca.intermediate], sans)
    if not keys.key_matches_cert(key, cert):
        raise NtspkiError("internal error: the new key does not match the new certificate")
    return _Built(lineage, keys.private_pem(key), pki.cert_pem(cert), pki.CertInfo.of(cert), ident.key_type, days)


@functools.lru_cache(maxsize=4)  # certificates hash by DER: one Anchors for a whole batch
def _anchors(root: x509.Certificate) -> verify.Anchors:
    return verify.Anchors([root])


def _write(home: Home, ca: ca_mod.CA, built: _Built, durable: bool) -> Issued:
    """Version, renewal parameters and ledger row for one certificate (caller holds the lock)."""
    home.remove_stale_temps([built.lineage])
    version = home.prepare_version(built.lineage, built.key_pem, built.cert_pem, ca.chain_pem, durable)
    return _publish(home, built, version, durable)


def _publish(home: Home, built: _Built, version: int, durable: bool) -> Issued:
    """Switch live/ to a prepared version, then its renewal file and ledger row."""
    lineage, info, key_type = built.lineage, built.info, built.key_type
    home.switch_version(lineage, version, durable)
    params = {"source": "internal", "sans": info.sans, "key_type": key_type, "days": built.days}
    home.write_renewal(lineage, params, durable)
    home.ledger.record(lineage, version, info, key_type, "internal")
    return Issued(
        lineage, version, info.sans, info.serial, info.sha256, info.not_after, key_type, str(home.live / lineage)
    )


def issue(
    home: Home,
    name: str,
    sans: Sequence[str] | None = None,
    key_type: str | None = None,
    days: int | None = None,
    allow_change: bool = False,
) -> Issued:
    """The next version of lineage NAME. Names, key type and lifetime left out (None; no `sans`)
    are the lineage's own (see keep_identity); a new lineage gets NAME only, ec-p256, 90 days."""
    _check_options(key_type, days)
    req = Request(name, list(sans or ()))
    _ = req.general_names  # validate names before anything else
    ident, _stored = keep_identity(home, req, key_type, days, "internal", allow_change, names_given=bool(sans))
    ca = ca_mod.load(home)
    built = _build(ca, req, ident)
    home.ensure()
    with home.lock():
        _ = home.ledger  # a ledger that cannot be opened fails here, before any file is written
        return _write(home, ca, built, durable=True)


@dataclass
class Rehearsal:
    """What `issue` would write, made and validated but written nowhere (`renew --dry-run`)."""

    info: pki.CertInfo
    key_type: str
    key_pem: bytes
    cert_pem: bytes
    chain_pem: bytes


def rehearse(
    home: Home, name: str, sans: Sequence[str] | None = None, key_type: str | None = None, days: int | None = None
) -> Rehearsal:
    _check_options(key_type, days)
    req = Request(name, list(sans or ()))
    ident, _stored = keep_identity(home, req, key_type, days, "internal", names_given=bool(sans))
    ca = ca_mod.load(home)
    built = _build(ca, req, ident)
    return Rehearsal(built.info, built.key_type, built.key_pem, built.cert_pem, ca.chain_pem)


def issue_many(
    home: Home,
    requests: list[Request],
    key_type: str | None = None,
    days: int | None = None,
    progress=None,
    allow_change: bool = False,
) -> list[Issued]:
    """A fleet in one lock; durable on return.

    Every certificate is made and validated before the first one goes live, so a bad request
    (say, a name outside the CA's name constraints, or one that would change an existing lineage's
    names) issues nothing and names its line: the versions written until then are taken back.
    Keys and certificates are made on every CPU (`_builder`) while this process alone writes each
    new version (archive files and version directory, not live yet) as it arrives; then one
    file-system sync, each lineage switched with its ledger row, and a second sync. A batch killed
    part-way leaves each lineage at its old or its new version and a ledger that matches; the next
    write of a lineage removes what was not switched."""
    _check_options(key_type, days)
    ca = ca_mod.load(home)
    home.ensure()
    with _builder(home, ca, requests, key_type, days, allow_change) as results, home.lock():
        _ = home.ledger  # a ledger that cannot be opened fails here, before any file is written
        prepared: list[tuple[_Built, int]] = []
        issued: list[Issued] = []
        try:
            for b in results:
                prepared.append((b, home.prepare_version(b.lineage, b.key_pem, b.cert_pem, ca.chain_pem, False)))
                if progress:
                    progress(1)
            home.remove_stale_temps([b.lineage for b, _ in prepared])
            home.sync()  # no lineage switches to a version that a power cut could still lose
            for b, version in prepared:
                issued.append(_publish(home, b, version, durable=False))
            return issued
        except BaseException:
            for b, version in reversed(prepared[len(issued) :]):
                home.discard_version(b.lineage, version)
            raise
        finally:
            home.sync()


# Set in the parent before the pool forks, read by the workers: the CA's key never crosses a pipe.
_job: tuple | None = None


@contextlib.contextmanager
def _builder(
    home: Home,
    ca: ca_mod.CA,
    requests: list[Request],
    key_type: str | None,
    days: int | None,
    allow_change: bool,
) -> Iterator[Iterator[_Built]]:
    """`keep_identity` and `_build` for every request, yielded in request order; for a large batch
    on every CPU (forked workers: they inherit the loaded CA, and fork before the caller takes the
    home lock). The first failing request, in file order, raises its error."""
    global _job
    _job = (home, ca, key_type, days, allow_change)
    work = [(r.name, r.sans, r.origin) for r in requests]
    workers = min(len(os.sched_getaffinity(0)), len(work) // 32)
    try:
        if workers < 2:
            yield _in_order(_build_chunk([item]) for item in work)
        else:
            size = max(8, min(64, len(work) // (workers * 8)))
            with _Workers(workers, [work[i : i + size] for i in range(0, len(work), size)]) as chunks:
                yield _in_order(chunks)
    finally:
        _job = None


class _Workers:
    """Forked children, each building every n-th chunk and sending the results down its pipe;
    read back in chunk order. Plain fork and pipes: multiprocessing.Pool's helper threads cost
    this process more CPU (GIL hand-offs) than the pickling itself."""

    def __init__(self, count: int, chunks: list):
        self.count, self.chunks = count, chunks
        self.children: list[tuple[int, BinaryIO]] = []

    def __enter__(self) -> Iterator[list[_Built] | _Failed]:
        for k in range(self.count):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns into the caller's code
                try:
                    os.close(r)
                    with os.fdopen(w, "wb") as out:
                        for chunk in self.chunks[k :: self.count]:
                            result = _build_chunk(chunk)
                            pickle.dump(result, out)
                            if isinstance(result, _Failed):
                                break
                except BaseException as e:  # a bug: the parent raises it
                    with contextlib.suppress(BaseException):
                        pickle.dump(e, os.fdopen(w, "wb", closefd=False))
                finally:
                    os._exit(0)
            os.close(w)
            self.children.append((pid, os.fdopen(r, "rb")))
        return self._results()

    def _results(self) -> Iterator[list[_Built] | _Failed]:
        for i in range(len(self.chunks)):
            result = pickle.load(self.children[i % self.count][1])
            if isinstance(result, BaseException):
                raise result
            yield result

    def __exit__(self, *exc) -> None:
        for pid, pipe in self.children:
            pipe.close()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # done, or not needed any more (a failed request)
            os.waitpid(pid, 0)


def _in_order(chunks: Iterable[list[_Built] | _Failed]) -> Iterator[_Built]:
    for chunk in chunks:
        if isinstance(chunk, _Failed):
            raise NtspkiError(chunk.message, chunk.exit_code)
        yield from chunk


@dataclass
class _Failed:
    message: str
    exit_code: int


def _build_chunk(work: list[tuple[str, list[str], str]]) -> list[_Built] | _Failed:
    assert _job is not None
    home, ca, key_type, days, allow_change = _job
    out = []
    for name, sans, origin in work:
        req = Request(name, sans, origin)
        try:
            ident, _stored = keep_identity(home, req, key_type, days, "internal", allow_change)
            out.append(_build(ca, req, ident))
        except NtspkiError as e:
            return _Failed(f"{req.origin}: {e}" if req.origin else str(e), e.exit_code)
    return out


MAX_BATCH_FILE = 16 << 20  # ~300,000 names


def read_batch_file(path: str) -> list[Request]:
    from ntspki.store import fsutil

    if path == "-":
        data = sys.stdin.buffer.read(MAX_BATCH_FILE + 1)
        if len(data) > MAX_BATCH_FILE:
            raise NtspkiError(f"the list on standard input is larger than {MAX_BATCH_FILE} bytes", 2)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NtspkiError("the list on standard input is not UTF-8 text", 2) from None
    else:
        text = fsutil.read_bounded(path, MAX_BATCH_FILE, "list").decode()
    return parse_batch(text, path)
