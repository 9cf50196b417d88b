"""`check`, server side: each ntsserverkey/ntsservercert pair (the key, the chain, expiry); the
permissions chronyd's user needs on them and ntsdumpdir are `filechecks`."""

from __future__ import annotations

import datetime as dt

from ntspki.audit.filechecks import FileChecks
from ntspki.audit.findings import CertState
from ntspki.errors import NtspkiError
from ntspki.servers import chronyconf


class ServerChecks(FileChecks):
    # -- ntsserverkey / ntsservercert -----------------------------------------------------------------
    def server_side(self) -> None:
        keys = self.conf.all("ntsserverkey")
        certs = self.conf.all("ntsservercert")
        if not keys and not certs:
            self.add("info", "no-nts-server", "no ntsserverkey/ntsservercert: this chronyd is not an NTS server")
            return
        if len(keys) != len(certs):
            self.add(
                "critical",
                "pair-count",
                f"{len(keys)} ntsserverkey but {len(certs)} ntsservercert directives: chronyd pairs them "
                "in order and refuses to start when the counts differ",
                "give one ntsserverkey for every ntsservercert",
                where=(keys or certs)[0].where,
            )
        for d in keys + certs:
            if not d.args:
                self.add(
                    "critical",
                    "conf-syntax",
                    f"{d.name} without a file name: chronyd refuses the configuration",
                    f"fix {d.where}",
                    where=d.where,
                )
                return
        chains = [self.pair(kd, cd) for kd, cd in zip(keys, certs)]
        self.dumpdir()
        if self.do_probe:
            self.probe_local(list(zip(certs, chains)))

    def pair(self, kd: chronyconf.Directive, cd: chronyconf.Directive) -> list:
        """Check one ntsserverkey/ntsservercert pair; the chain read from the certificate file."""
        key_path, cert_path = kd.args[0], cd.args[0]
        chain = self.cert_file(cert_path, cd.where)
        key = self.key_file(key_path, kd.where)
        if key is not None and chain:
            from ntspki.pki import keys as keys_mod

            if keys_mod.key_matches_cert(key, chain[0]):
                self.add(
                    "ok", "key-matches", f"{key_path} is the key of the first certificate in {cert_path}", path=key_path
                )
            else:
                elsewhere = [i + 1 for i, c in enumerate(chain) if keys_mod.key_matches_cert(key, c)]
                detail = f" (it matches certificate #{elsewhere[0]}: the chain is out of order)" if elsewhere else ""
                self.add(
                    "critical",
                    "key-mismatch",
                    f"{key_path} is not the key of the first certificate in {cert_path}{detail}: chronyd "
                    "logs 'The certificate and the given key do not match.' and serves no NTS",
                    "deploy the key and certificate of the same issuance together",
                    key_path,
                    kd.where,
                )
        self.permissions(key_path, "key", kd.where)
        self.permissions(cert_path, "cert", cd.where)
        return chain

    def cert_file(self, path: str, where: str) -> list:
        from ntspki import pki
        from ntspki.pki import verify

        data = self.read(path, "cert", where)
        if data is None:
            return []
        try:
            chain = verify.load_chain(data, path)
        except verify.ChainError as e:
            self.add("critical", "chain-too-long", str(e), "keep only the leaf and its intermediates", path, where)
            return []
        except NtspkiError:
            self.add("critical", "cert-unparsable", f"{path} holds no readable PEM certificate", None, path, where)
            return []
        leaf = chain[0]
        cas = [verify.is_ca(c) for c in chain]
        leaf_first = not cas[0]
        leaf_at = next((i + 1 for i, ca in enumerate(cas) if not ca), None)
        if not leaf_first and leaf_at:
            # chronyd pairs the key with the first certificate; only the leaf's place matters to it.
            self.add(
                "critical",
                "chain-order",
                f"{path} does not start with the server certificate (it is certificate #{leaf_at} of "
                f"{len(chain)}): chronyd pairs the key with the first certificate and logs 'The certificate and "
                "the given key do not match.'",
                "write the server certificate first (certbot's and ntspki's fullchain.pem are in that order)",
                path,
                where,
            )
        elif not leaf_first:
            self.add(
                "critical",
                "cert-is-ca",
                f"{path} holds only CA certificates (basicConstraints CA:TRUE), no server certificate: a CA "
                "certificate is refused as a server's own (openssl req -x509 makes one by default)",
                "issue a server certificate for the names clients use (ntspki issue NAME) and point "
                "ntsservercert at its fullchain.pem",
                path,
                where,
            )
        else:
            for i in range(len(chain) - 1):
                if not verify.issued_by(chain[i], chain[i + 1]):
                    # The verifier builds the path from the certificates in any order after the leaf,
                    # and so do GnuTLS's clients: untidy, not broken.
                    self.add(
                        "info",
                        "chain-unsorted",
                        f"{path}: the certificates after the server certificate are not in issuing order "
                        f"(#{i + 2} did not issue #{i + 1}); clients sort them, the conventional order is each "
                        "certificate's issuer next",
                        path=path,
                        where=where,
                    )
                    break
        if any(pki.is_self_signed(c) for c in chain[1:]):
            self.add(
                "warning",
                "chain-root",
                f"{path} includes a root certificate: clients must already trust it, so it only adds "
                "bytes to every handshake",
                "drop the root (leaf and intermediates only)",
                path,
                where,
            )
        if leaf_first:
            self.local_leaves.append(leaf)
            try:
                verify.verify_chain(self.store(), chain)
            except verify.ChainError as e:
                self.chain_refused(e, len(chain), path, where)
            else:
                self.add("ok", "chain-verifies", f"{path} verifies against {self.trust_text}", path=path)
        # Out of order, the server certificate is still somewhere in the file: judge that one.
        leaf = next((c for c, ca in zip(chain, cas) if not ca), leaf)
        eku = verify.eku_error(leaf)
        if eku:
            self.add("critical", "eku", f"{path}: {eku}", "issue a certificate with EKU serverAuth", path, where)
        if not pki.sans_of(leaf):
            self.add(
                "critical",
                "no-san",
                f"{path}: the certificate has no DNS or IP subjectAltName: no client can match it",
                "reissue with the names clients use",
                path,
                where,
            )
        for i, c in enumerate(chain, 1):
            self.expiry(c, path, i, where)
        return chain

    def chain_refused(self, e, length: int, path: str, where: str) -> None:
        """A finding for the verifier's refusal, unless one below (expiry, eku, no-san) says it for
        a certificate in the file."""
        if length == 1 and e.rule == "unknown-issuer":
            self.add(
                "critical",
                "chain-incomplete",
                f"{path} holds only the server certificate, not its intermediates: clients fail with "
                "'The certificate issuer is unknown.'",
                "point ntsservercert at the full chain (leaf then intermediates, e.g. fullchain.pem)",
                path,
                where,
            )
        elif e.rule in ("eku", "no-san") and e.position == 1 or e.rule in ("expired", "not-yet-valid") and e.position:
            return
        else:
            hint = None if self.ca_files else "for a private CA, give its root with --ca ROOT.pem"
            self.add("critical", "chain-verify", f"{path}: {e}", hint, path, where)

    def expiry(self, cert, path: str, position: int, where: str) -> None:
        from ntspki import pki

        now = dt.datetime.now(dt.UTC)
        subject = cert.subject.rfc4514_string()
        days = (cert.not_valid_after_utc - now).total_seconds() / 86400
        self.report.certificates.append(
            CertState(
                path, position, subject, pki.fingerprint(cert), cert.not_valid_after_utc.isoformat(), round(days, 3)
            )
        )
        what = "the server certificate" if position == 1 else f"certificate #{position}"
        label = f"{path}: {what} ({subject})"
        renew = "renew and redeploy it (ntspki renew / certbot renew, then ntspki deploy)"
        if cert.not_valid_before_utc > now:
            self.add(
                "critical",
                "not-yet-valid",
                f"{label} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                "check the clocks of this machine and of the CA",
                path,
                where,
            )
        elif days < 0:
            self.add(
                "critical",
                "expired",
                f"{label} expired on {cert.not_valid_after_utc:%Y-%m-%d}: every client refuses it",
                renew,
                path,
                where,
            )
        elif days < self.critical_days:
            self.add(
                "critical",
                "expiring",
                f"{label} expires in {days:.1f} days ({cert.not_valid_after_utc:%Y-%m-%d})",
                renew,
                path,
                where,
            )
        elif days < self.warn_days:
            self.add(
                "warning",
                "expiring",
                f"{label} expires in {days:.1f} days ({cert.not_valid_after_utc:%Y-%m-%d})",
                renew,
                path,
                where,
            )
        else:
            self.add("ok", "valid", f"{label} is valid for {int(days)} more days", path=path)

    def key_file(self, path: str, where: str):
        from ntspki.pki import keys

        data = self.read(path, "key", where)
        if data is None:
            return None
        try:
            key = keys.load_private_pem(data, what=path)
        except keys.EncryptedKey:
            self.add(
                "critical",
                "key-encrypted",
                f"{path} is encrypted: chronyd cannot ask for a passphrase and fails with "
                "'Could not set credentials : Decryption has failed.'",
                f"store it unencrypted, readable only by root and {self.who.name}",
                path,
                where,
            )
            return None
        except NtspkiError as e:
            self.add("critical", "key-unparsable", str(e), None, path, where)
            return None
        key_type = keys.key_type_of(key)
        if key_type not in ("ec-p256", "ec-p384", "ed25519") and not key_type.startswith("rsa-"):
            self.add(
                "warning",
                "key-type",
                f"{path}: {type(key).__name__} keys are not known to load in chronyd",
                "use EC P-256/P-384, Ed25519 or RSA",
                path,
                where,
            )
        return key
