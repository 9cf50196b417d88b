"""Key types ntspki makes: every one of them loads in chronyd as `ntsserverkey` (tested)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ntspki.constants import ACME_KEY_TYPES as ACME_KEY_TYPES
from ntspki.constants import DEFAULT_KEY_TYPE as DEFAULT_KEY_TYPE
from ntspki.constants import KEY_TYPES as KEY_TYPES
from ntspki.errors import NtspkiError


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
    if passphrase:
        return encrypted_pkcs8_pem(key, passphrase)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# A stolen encrypted root key is attacked offline, one passphrase guess per key derivation: OWASP's
# 2023 floor for PBKDF2-HMAC-SHA256. `BestAvailableEncryption` uses 2048 rounds, and `cryptography`
# (50) offers no rounds setting for PKCS#8 (its encryption_builder is OpenSSH and PKCS#12 only).
KDF_ROUNDS = 600_000
# DER of the four algorithm identifiers of RFC 8018 PBES2 that OpenSSL and `cryptography` both read.
_OID_PBES2 = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13
_OID_PBKDF2 = bytes.fromhex("06092a864886f70d01050c")  # 1.2.840.113549.1.5.12
_OID_HMAC_SHA256 = bytes.fromhex("06082a864886f70d0209")  # 1.2.840.113549.2.9
_OID_AES256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _seq(*parts: bytes) -> bytes:
    return _der(0x30, b"".join(parts))


def encrypted_pkcs8_pem(key, passphrase: bytes, rounds: int = KDF_ROUNDS) -> bytes:
    """An RFC 5958 EncryptedPrivateKeyInfo: PBES2 with PBKDF2-HMAC-SHA256 (`rounds`) and AES-256-CBC,
    exactly what `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -iter N` writes."""
    import base64
    import os

    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    plain = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, iv = os.urandom(16), os.urandom(16)
    secret = PBKDF2HMAC(hashes.SHA256(), 32, salt, rounds).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    kdf = _seq(
        _OID_PBKDF2,
        _seq(
            _der(0x04, salt),
            _der(0x02, rounds.to_bytes(rounds.bit_length() // 8 + 1, "big")),
            _seq(_OID_HMAC_SHA256, b"\x05\x00"),
        ),
    )
    algorithm = _seq(_OID_PBES2, _seq(kdf, _seq(_OID_AES256_CBC, _der(0x04, iv))))
    b64 = base64.b64encode(_seq(algorithm, _der(0x04, sealed)))
    body = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + body + b"\n-----END ENCRYPTED PRIVATE KEY-----\n"


def kdf_rounds(pem: bytes) -> int | None:
    """The PBKDF2 rounds of an encrypted PKCS#8 PEM key (None: not PBES2/PBKDF2, or not encrypted)."""
    import base64

    lines = pem.strip().splitlines()
    if not lines or lines[0] != b"-----BEGIN ENCRYPTED PRIVATE KEY-----":
        return None
    der = base64.b64decode(b"".join(lines[1:-1]))
    at = der.find(_OID_PBKDF2)
    if at < 0:
        return None
    # PBKDF2 OID, params SEQUENCE, salt OCTET STRING, then the rounds INTEGER.
    i = at + len(_OID_PBKDF2) + 2
    i += 2 + der[i + 1]
    if der[i] != 0x02:
        return None
    return int.from_bytes(der[i + 2 : i + 2 + der[i + 1]], "big")


MAX_PASSPHRASE = 1023  # OpenSSL's PEM passphrase buffer: openssl must still read the key


def check_passphrase(value: bytes, what: str = "the passphrase") -> bytes:
    """A passphrase the key format and openssl can take: UTF-8 text on one line, 1..1023 bytes."""
    if not value:
        raise NtspkiError(f"{what} is empty", 2)
    if len(value) > MAX_PASSPHRASE:
        raise NtspkiError(f"{what} is longer than {MAX_PASSPHRASE} bytes (openssl could not read the key)", 2)
    if b"\0" in value or b"\n" in value or b"\r" in value:
        raise NtspkiError(f"{what} holds a NUL or a line break (one line of text only)", 2)
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        raise NtspkiError(f"{what} is not UTF-8 text", 2) from None
    return value


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
