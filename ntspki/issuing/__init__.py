"""Orchestration of what a CA does: create and load the CA (`ca`), report on it (`castatus`), issue lineages (`issue`),
renew them (`renew`, internal or ACME).

Layer: below the CLI. May import `pki` (pure X.509), `store` (home, lineages, ledger), `acme`,
`deploy` (renew deploys what it renewed) and `errors`; never `cli`.
"""
