"""Root rollover in three phases, each a command that is safe to repeat and to kill:

    start   a new root + intermediate in ca/next/; the trust bundle holds both roots; servers still
            serve the old chain. Clients must get the bundle (`ntspki trust export`) before...
    switch  issuance moves to the new chain (ca/next/ becomes ca/, the old one ca/previous/ and its
            intermediate is retired, to keep signing CRLs); re-issue and deploy (`renew --force`).
    finish  the old root leaves the trust bundle (refused while a lineage still has an old-chain
            certificate, unless forced); ca/previous/ is kept as ca/old-roots/FINGERPRINT/.

The phase is recorded in ca/rollover.json (written atomically, always last in a step); `switch`
records "switching" first, and every one of its steps checks whether it is already done, so a
killed switch completes when run again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.issuing import ca as ca_mod
from ntspki.issuing import castatus, trust
from ntspki.pki import keys
from ntspki.store import Home, fsutil

PHASES = ("started", "switching", "switched", "finished")
FILES = ("private/root.key", "private/intermediate.key", "intermediate.pem", "root.pem")  # keys first


def _sweep(home: Home) -> None:
    """Staging directories of a killed start or switch (they may hold key copies)."""
    for stale in [*home.ca_dir.glob(".next.new-*"), *home.ca_dir.glob(".previous.new-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def state_path(home: Home) -> Path:
    return home.ca_dir / "rollover.json"


def state(home: Home) -> dict | None:
    if not os.path.lexists(state_path(home)):
        return None
    try:
        data = json.loads(fsutil.read_bounded(state_path(home), 64 << 10, "rollover state", exit_code=1))
    except (OSError, ValueError, RecursionError) as e:
        raise NtspkiError(f"cannot read the rollover state {state_path(home)}: {e}")
    if not isinstance(data, dict) or data.get("phase") not in PHASES:
        raise NtspkiError(f"{state_path(home)} is damaged (no known phase): fix or remove it")
    return data


def _record(home: Home, data: dict, phase: str) -> dict:
    data = {**data, "phase": phase, f"{phase}_at": pki.now().isoformat()}
    fsutil.atomic_write(state_path(home), json.dumps(data, indent=2).encode() + b"\n", 0o644)
    return data


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca_mod.read_ca_file(path))


@dataclass
class Step:
    phase: str
    changed: bool
    message: str
    state: dict

    def to_dict(self) -> dict:
        return {"phase": self.phase, "changed": self.changed, "message": self.message, "state": self.state}


def start(
    home: Home,
    passphrase: bytes | None,
    key_type: str | None = None,
    root_days: int = pki.ROOT_DAYS,
    intermediate_days: int = pki.INTERMEDIATE_DAYS,
) -> Step:
    """A new root and intermediate beside the current ones; both roots in the trust bundle."""
    ca_mod.check_lifetimes(root_days, intermediate_days)
    current = ca_mod.load(home)
    with home.lock():
        _sweep(home)
        st = state(home)
        if st and st["phase"] == "started" and (home.ca_dir / "next" / "root.pem").exists():
            return Step("started", False, "the rollover is already started", st)
        if st and st["phase"] in ("switching", "switched"):
            raise NtspkiError(
                f"a rollover is at phase {st['phase']}: run `ntspki ca rollover "
                f"{'switch' if st['phase'] == 'switching' else 'finish'}` first",
                2,
            )
        nxt = home.ca_dir / "next"
        if not (nxt / "root.pem").exists():
            shutil.rmtree(nxt, ignore_errors=True)  # never complete: its root.pem comes last
            staging = home.ca_dir / f".next.new-{secrets.token_hex(4)}"
            dns, ips = ca_mod.constraints_of(current.intermediate)
            try:
                ca_mod.build_into(
                    staging,
                    key_type or keys.key_type_of(current.root.public_key()),
                    passphrase,
                    root_days,
                    intermediate_days,
                    dns,
                    ips,
                    pki.organization(current.root) or "ntspki",
                )
                os.rename(staging, nxt)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        new_root = _cert(nxt / "root.pem")
        trust.write_bundle(home.ca_dir, [current.root, new_root])
        data = {"old_root": pki.fingerprint(current.root), "new_root": pki.fingerprint(new_root)}
        st = _record(home, data, "started")
    return Step(
        "started",
        True,
        "new root made; the trust bundle holds both roots: give every client "
        "`ntspki trust export` now, then run `ntspki ca rollover switch`",
        st,
    )


def switch(home: Home) -> Step:
    """Issuance moves to the new chain. Resumable: each step is skipped when already done."""
    ca_mod.load(home)
    with home.lock():
        _sweep(home)
        st = state(home)
        if not st or st["phase"] == "finished":
            raise NtspkiError("no root rollover under way: run `ntspki ca rollover start` first", 2)
        if st["phase"] == "switched":
            return Step("switched", False, "the rollover is already switched", st)
        nxt, prev = home.ca_dir / "next", home.ca_dir / "previous"
        if st["phase"] == "started":
            if not (nxt / "root.pem").exists():
                raise NtspkiError(f"{nxt} is missing: run `ntspki ca rollover start` again", 2)
            st = _record(home, st, "switching")
        # 1. keep the old chain (as ca/previous/, made complete in a staging directory first)
        if not (prev / "root.pem").exists() and (nxt / "root.pem").exists():
            shutil.rmtree(prev, ignore_errors=True)
            staging = home.ca_dir / f".previous.new-{secrets.token_hex(4)}"
            try:
                staging.mkdir(mode=0o755)
                fsutil.make_private_dir(staging / "private")
                for name in FILES:
                    mode = 0o600 if name.startswith("private/") else 0o644
                    fsutil.atomic_write(staging / name, ca_mod.read_ca_file(home.ca_dir / name), mode)
                os.rename(staging, prev)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        # 2. its intermediate keeps signing CRLs for the certificates it issued
        ca_mod.retire(
            home, _cert(prev / "intermediate.pem"), ca_mod.read_ca_file(prev / "private" / "intermediate.key")
        )
        # 3. the new chain becomes the issuing one (keys first, root.pem last)
        if (nxt / "root.pem").exists():
            for name in FILES:
                fsutil.atomic_write(
                    home.ca_dir / name, ca_mod.read_ca_file(nxt / name), 0o600 if name.startswith("private/") else 0o644
                )
            trust.write_bundle(home.ca_dir, [_cert(home.ca_dir / "root.pem"), _cert(prev / "root.pem")])
            shutil.rmtree(nxt)
        st = _record(home, st, "switched")
    return Step(
        "switched",
        True,
        "issuance uses the new root now: re-issue and deploy every server "
        "(`ntspki renew --force`), then run `ntspki ca rollover finish`",
        st,
    )


def old_chain_lineages(home: Home) -> list[str]:
    """Lineages whose current certificate was not issued under the current root."""
    root = _cert(home.ca_dir / "root.pem")
    under_root = {i.cert.subject for i in ca_mod.issuers(home) if i.cert.issuer == root.subject}
    out = []
    for name in trust.lineage_names(home):
        try:
            leaf = pki.load_certs(home.read_lineage(name).cert, name)[0]
        except NtspkiError:
            continue
        if leaf.issuer not in under_root:
            out.append(name)
    return out


def finish(home: Home, force: bool = False) -> Step:
    """The old root leaves the trust bundle."""
    ca_mod.load(home)
    with home.lock():
        st = state(home)
        if not st:
            raise NtspkiError("no root rollover under way: run `ntspki ca rollover start` first", 2)
        if st["phase"] == "finished":
            return Step("finished", False, "the rollover is already finished", st)
        if st["phase"] != "switched":
            raise NtspkiError(f"the rollover is at phase {st['phase']}: run `ntspki ca rollover switch` first", 2)
        stale = old_chain_lineages(home)
        if stale and not force:
            raise NtspkiError(
                f"still on the old root: {', '.join(stale)}; clients that drop the old root "
                "would refuse them: re-issue and deploy them (`ntspki renew --force`), "
                "or use --force",
                2,
            )
        trust.write_bundle(home.ca_dir, [_cert(home.ca_dir / "root.pem")])
        prev = home.ca_dir / "previous"
        if (prev / "root.pem").exists():
            old_root = _cert(prev / "root.pem")
            old = home.ca_dir / "old-roots" / pki.fingerprint(old_root)[:16]
            old.parent.mkdir(mode=0o755, exist_ok=True)
            # The old root's intermediates sign no more CRLs: nobody trusts their certificates now.
            for issuer in ca_mod.issuers(home):
                if not issuer.current and issuer.cert.issuer == old_root.subject:
                    fsutil.make_private_dir(prev / "private" / "retired")
                    (prev / "retired").mkdir(mode=0o755, exist_ok=True)
                    os.replace(issuer.key_path, prev / "private" / "retired" / issuer.key_path.name)
                    os.replace(
                        home.ca_dir / "retired" / f"{issuer.key_path.stem}.pem",
                        prev / "retired" / f"{issuer.key_path.stem}.pem",
                    )
            if old.exists():
                shutil.rmtree(prev)
            else:
                os.rename(prev, old)
        st = _record(home, st, "finished")
    return Step(
        "finished", True, "the old root has left the trust bundle: give every client `ntspki trust export` again", st
    )


def describe(home: Home, st: dict | None, now: dt.datetime | None = None) -> dict | None:
    """The rollover part of `ca status`."""
    if not st:
        return None
    out = {"phase": st["phase"], **{k: v for k, v in st.items() if k.endswith("_at") or k.endswith("_root")}}
    nxt = home.ca_dir / "next" / "root.pem"
    prev = home.ca_dir / "previous" / "root.pem"
    if nxt.exists():
        out["next_root"] = castatus.cert_status(_cert(nxt), now)
    if prev.exists():
        out["previous_root"] = castatus.cert_status(_cert(prev), now)
    if st["phase"] == "switched":
        out["old_chain_lineages"] = old_chain_lineages(home)
    return out
