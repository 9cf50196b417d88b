"""NTS itself (RFC 8915): the NTS-KE record codec and TLS client (`ntske`), and the probe that
does NTS-KE plus one authenticated NTP exchange (`probe`).

Layer: domain + network. May import `pki` and `errors`; never `store`, `deploy` or `cli`.
pyOpenSSL is imported by `ntske` (TLS exporter), so only commands that probe import that module;
this file stays light: the protocol's ports live here for every layer to import.
"""

NTSKE_PORT = 4460  # RFC 8915 section 6: NTS-KE over TLS
NTP_PORT = 123
