"""ACME accounts: the ES256 account key and its metadata in HOME/accounts/<id>/ (0600), and
registration (idempotent: the stored key is reused, and the CA answers with the existing account).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import josepy as jose
from acme import errors as acme_errors
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec

from ntspki.acme.connection import Connection, ca_errors, resolve_directory
from ntspki.errors import NtspkiError
from ntspki.pki import keys
from ntspki.store import Home, fsutil


def accounts_dir(home: Home) -> Path:
    return home.path / "accounts"


def account_dir(home: Home, directory_url: str) -> Path:
    """One account per directory URL: HOME/accounts/<first 16 hex of sha256(url)>/."""
    return accounts_dir(home) / hashlib.sha256(directory_url.encode()).hexdigest()[:16]


@dataclass
class Account:
    directory: str
    uri: str
    contact: list[str]
    created: str
    path: str
    key: Any = field(repr=False, default=None)  # josepy JWK
    new: bool = False

    def to_dict(self) -> dict:
        return {
            "directory": self.directory,
            "uri": self.uri,
            "contact": self.contact,
            "created": self.created,
            "path": self.path,
            "new": self.new,
        }


def load_account(home: Home, directory_url: str) -> Account | None:
    d = account_dir(home, directory_url)
    if not os.path.lexists(d / "account.json"):
        return None
    try:
        meta = json.loads(fsutil.read_bounded(d / "account.json", 64 << 10, "ACME account", exit_code=1))
        key_pem = fsutil.read_bounded(d / "private_key.pem", fsutil.PEM_LIMIT, "ACME account key", exit_code=1)
    except (OSError, ValueError, RecursionError) as e:
        raise NtspkiError(f"cannot read the ACME account in {d}: {e}")
    key = keys.load_private_pem(key_pem, what=f"ACME account key {d / 'private_key.pem'}")
    return Account(
        meta["directory"], meta["uri"], meta.get("contact", []), meta.get("created", ""), str(d), jose.JWKEC(key=key)
    )


def _save_account(home: Home, account: Account) -> None:
    d = Path(account.path)
    home.ensure()
    with home.lock():
        fsutil.make_private_dir(accounts_dir(home))
        fsutil.make_private_dir(d)
        fsutil.atomic_write(d / "private_key.pem", keys.private_pem(account.key.key), 0o600)
        meta = {k: v for k, v in account.to_dict().items() if k not in ("path", "new")}
        fsutil.atomic_write(d / "account.json", json.dumps(meta, indent=2).encode() + b"\n", 0o600)


def check_options(email: str | None, eab_kid: str | None, eab_hmac_key: str | None) -> None:
    """Usage errors in the account options, before any connection is made."""
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise NtspkiError(f"bad --email {email!r}", 2)
    if bool(eab_kid) != bool(eab_hmac_key):
        raise NtspkiError("--eab-kid and --eab-hmac-key go together", 2)
    if eab_hmac_key and not re.fullmatch(r"[A-Za-z0-9_-]{16,}={0,2}", eab_hmac_key):
        raise NtspkiError("bad --eab-hmac-key: expected the base64url HMAC key your CA gave you", 2)


def register(
    home: Home,
    directory: str | None = None,
    ca_bundle: str | None = None,
    email: str | None = None,
    agree_tos: bool = False,
    eab_kid: str | None = None,
    eab_hmac_key: str | None = None,
    conn: Connection | None = None,
) -> Account:
    """Make (or find again) the account for this directory. Idempotent: the stored key is reused,
    and the CA answers with the existing account for a key it knows."""
    url = resolve_directory(directory)
    check_options(email, eab_kid, eab_hmac_key)
    existing = load_account(home, url)
    conn = conn or Connection(url, ca_bundle)
    if not agree_tos:
        tos = conn.meta.terms_of_service
        raise NtspkiError(
            "registering an ACME account needs --agree-tos (the CA's terms of service" + (f": {tos})" if tos else ")"),
            2,
        )
    if conn.client.external_account_required() and not eab_kid:
        raise NtspkiError(
            f"the CA at {urlsplit(url).netloc} requires External Account Binding: "
            "give --eab-kid and --eab-hmac-key from your CA account",
            2,
        )
    key = existing.key if existing else jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    conn.net.key = key
    conn.net.account = None
    eab = None
    if eab_kid:
        if not eab_hmac_key or not re.fullmatch(r"[A-Za-z0-9_-]{16,}={0,2}", eab_hmac_key):
            raise NtspkiError("bad --eab-hmac-key: expected the base64url HMAC key your CA gave you", 2)
        try:
            eab = messages.ExternalAccountBinding.from_data(key.public_key(), eab_kid, eab_hmac_key, conn.directory)
        except (ValueError, TypeError, jose.DeserializationError) as e:
            raise NtspkiError(f"bad --eab-hmac-key (base64url of the HMAC key): {e}", 2)
    body = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True, external_account_binding=eab)
    created = True
    with ca_errors(url, "registering with"):
        try:
            regr = conn.client.new_account(body)
            uri = regr.uri
            contact = list(regr.body.contact or ())
        except acme_errors.ConflictError as e:  # the CA already knows this key
            uri, contact, created = e.location, (existing.contact if existing else []), False
            if email is not None and contact != [f"mailto:{email}"]:
                # A new --email for a known account: update the contact at the CA.
                regr = messages.RegistrationResource(body=messages.Registration(), uri=uri)
                conn.net.account = regr
                updated = conn.client.update_registration(regr, messages.Registration(contact=(f"mailto:{email}",)))
                contact = list(updated.body.contact or ())
    conn.net.account = messages.RegistrationResource(body=messages.Registration(), uri=uri)
    account = Account(
        url,
        uri,
        contact,
        existing.created if existing else dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        str(account_dir(home, url)),
        key,
        new=created and existing is None,
    )
    _save_account(home, account)
    return account
