"""Choices the CLI's options offer, here so that `ntspki --help` and every command's start-up do
not import cryptography's key and serialization modules (hooks and timers call the CLI).
`ntspki.pki.keys` and `ntspki.pki` re-export them; this is their one home. No imports."""

KEY_TYPES = ("ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096")
DEFAULT_KEY_TYPE = "ec-p256"
# What ACME CAs (Let's Encrypt and others) issue for: no Ed25519.
ACME_KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
MAX_DAYS = 36500  # the CA's own limit too: far beyond it notAfter leaves what X.509 can encode
