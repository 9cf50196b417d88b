"""Key types ntspki makes: every one of them loads in chronyd as `ntsserverkey` (tested)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ntspki.errors import NtspkiError

KEY_TYPES = ("ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096")
DEFAULT_KEY_TYPE = "ec-p256"
# What ACME CAs (Let's Encrypt and others) issue for: no Ed25519.
ACME_KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")


def generate(key_type: str):
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type.startswith("rsa-") and key_type in KEY_TYPES:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise NtspkiError(f"unknown key type {key_type!r} (choose from {', '.join(KEY_TYPES)})", 2)


def key_type_of(key) -> str:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(key.curve.name, f"ec-{key.curve.name}")
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"rsa-{key.key_size}"
    return type(key).__name__


def signature_hash(key):
    """The digest to sign with: SHA-384 for P-384, none for Ed25519 (built in), else SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def private_pem(key, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM (what chronyd, NTPsec and ntpd-rs all load), encrypted only when asked."""
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


class EncryptedKey(NtspkiError):
    """A private key that needs a passphrase (which NTS servers cannot give)."""


def is_encrypted_pem(data: bytes) -> bool:
    """PKCS#8 `ENCRYPTED PRIVATE KEY`, or a legacy OpenSSL PEM with `Proc-Type: 4,ENCRYPTED`: told
    by the PEM's own labels, never by a library's error text."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data


def load_private_pem(data: bytes, passphrase: bytes | None = None, what: str = "key"):
    """Load a PEM private key. Raises EncryptedKey when it needs a passphrase that was not given,
    NtspkiError for anything else."""
    if passphrase is None and is_encrypted_pem(data):
        raise EncryptedKey(f"{what} is encrypted: a passphrase is needed")
    try:
        return serialization.load_pem_private_key(data, passphrase)
    except TypeError as e:
        raise NtspkiError(f"{what}: {e}")
    except ValueError as e:
        if passphrase is not None:
            raise NtspkiError(f"wrong passphrase for {what}")
        raise NtspkiError(f"{what} is not a PEM private key ({e})")


def public_der(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_cert(key, cert) -> bool:
    return public_der(key) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
