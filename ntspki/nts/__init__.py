"""NTS itself (RFC 8915): the NTS-KE record codec (`records`), the NTS-KE TLS client
(`keclient`), one NTS-protected NTP exchange (`ntp`), `ntske` as the one import of all three, and
the probe that does NTS-KE plus one authenticated NTP exchange (`probe`).

Layer: domain + network. May import `pki`, `errors` and `store.fsutil.read_bounded` (the one bounded
reader of input files); never the rest of `store`, nor `deploy` or `cli`.
pyOpenSSL is imported by `keclient` (TLS exporter, through `ntske`), so only commands that probe import that module;
this file stays light: the protocol's ports live here for every layer to import.
"""

NTSKE_PORT = 4460  # RFC 8915 section 6: NTS-KE over TLS
NTP_PORT = 123
