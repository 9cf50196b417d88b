"""What ntspki knows about NTS servers: each server's behaviour as data (`services`),
chrony.conf parsing (`chronyconf`, with chronyd's own parser as a second opinion), a loopback
chronyd for the demo and the tests (`lab`), and servers in namespaces for the tests (`nslab`: a real
NTPsec, chronyd as a container runs it).

Layer: bottom, beside `store`. May import `pki` (names), `store.access` (users), `store.fsutil.read_bounded` (reading configs), the
protocol constants in `nts` and `errors`.
"""
