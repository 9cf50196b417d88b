"""What a deploy installs: a key and its certificate chain (`Pair`), and `load_source`, which
checks a lineage for everything the server will need before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ntspki import pki
from ntspki.deploy.deployconfig import Target
from ntspki.errors import NtspkiError
from ntspki.pki import keys, names, verify
from ntspki.store import ledger, read_live_dir


@dataclass
class Pair:
    key_pem: bytes
    cert_pem: bytes  # the full chain, leaf first: what `ntsservercert` needs
    # (uid, gid, mode) of key and cert when read from a destination: a rollback restores those
    # too, since a changed owner or mode can be what made the new pair unloadable.
    key_meta: tuple[int, int, int] | None = None
    cert_meta: tuple[int, int, int] | None = None

    @cached_property
    def chain(self):
        return pki.load_certs(self.cert_pem)

    @property
    def leaf(self):
        return self.chain[0]

    @cached_property
    def fingerprint(self) -> str:
        return pki.fingerprint(self.leaf)

    @cached_property
    def key_type(self) -> str:
        return keys.key_type_of(keys.load_private_pem(self.key_pem))

    def matches(self) -> bool:
        try:
            key = keys.load_private_pem(self.key_pem)
            return keys.key_matches_cert(key, self.leaf)
        except (NtspkiError, IndexError):
            return False


def load_source(target: Target) -> Pair:
    """Read the target's lineage and check everything the server will need. Raises NtspkiError."""
    src = target.source_dir
    lineage = read_live_dir(src, target.source)
    try:
        key = keys.load_private_pem(lineage.privkey, what=f"{src}/privkey.pem")
    except keys.EncryptedKey:
        raise NtspkiError(
            f"{src}/privkey.pem is encrypted: {target.service.name} cannot load an "
            "encrypted key (it fails with 'Decryption has failed')"
        )
    chain = verify.load_chain(lineage.fullchain, f"{src}/fullchain.pem")
    if not keys.key_matches_cert(key, chain[0]):
        where = next((i for i, c in enumerate(chain) if keys.key_matches_cert(key, c)), None)
        if where is not None:
            raise NtspkiError(
                f"{src}/fullchain.pem is not leaf first: the key's certificate is number {where + 1} of {len(chain)}"
            )
        raise NtspkiError(f"{src}/privkey.pem does not match the certificate in {src}/fullchain.pem")
    key_type = keys.key_type_of(key)
    if key_type not in target.service.key_types:
        raise NtspkiError(
            f"{src}: {target.service.name} cannot load a {key_type} key "
            f"(it loads {', '.join(target.service.key_types)})"
        )
    ledger.refuse_revoked(src, *chain)
    leaf = chain[0]
    wanted = list(target.names) if target.names else None
    if target.probe_name:
        wanted = (wanted or pki.san_strings(leaf)) + [target.probe_name]
    general = names.unique_sans(wanted) if wanted else None
    from ntspki.nts.probe import trust_store

    try:
        # Order, validity, every CA rule and the names: the verifier probe, check and issue use.
        verify.verify_chain(trust_store(target.ca), chain, general)
    except verify.ChainError as e:
        hint = (
            ""
            if target.ca or e.rule not in ("unknown-issuer", "untrusted")
            else " (set `ca` / --ca to the root that issued it)"
        )
        raise NtspkiError(f"{src}: {e}{hint}")
    except NtspkiError as e:  # an unreadable CA file, no system trust store
        raise NtspkiError(f"{src}: {e}")
    return Pair(lineage.privkey, lineage.fullchain)
