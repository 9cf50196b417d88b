"""An ACME (RFC 8555) client over the `acme` package's ClientV2: accounts, challenge solvers,
orders, ACME Renewal Information: `connection`, `accounts`, `solvers`, and `acmeclient` (ordering, ARI).

Layer: domain + network. May import `pki`, `store` (the request/result types are
`store.identity`'s) and `errors`; never `cli`, `deploy` or `issuing`. Imported only by commands that talk ACME (heavy).
"""
