"""What ntspki knows about NTS servers: each server's behaviour as data (`services`),
chrony.conf parsing (`chronyconf`), and a loopback chronyd for the demo and the tests (`lab`).

Layer: bottom, beside `store`. May import `pki` (names), `store.access` (users), the
protocol constants in `nts` and `errors`.
"""
