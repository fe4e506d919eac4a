"""Authenticated cache entries: every file of the disk cache carries a keyed MAC.

A cache entry is a pickle, and unpickling runs whatever code the pickle names.
So an entry is loaded only when its MAC, computed with a secret *signing key*,
matches: someone who can write to the cache directory but does not know the key
cannot forge an entry, nor move one to another cache key. An entry that fails
the check (forged, damaged, signed with another key, or written by an nbflow
older than this format) is refused before anything is unpickled.

The signing key is, in this order:

- ``NBFLOW_CACHE_KEY``: the key itself, for a team sharing a cache directory;
- the key file ``NBFLOW_CACHE_KEY_FILE`` names, or by default the per-user file
  ``$XDG_CONFIG_HOME/nbflow/cache-key`` (``~/.config/nbflow/cache-key``;
  ``%APPDATA%\\nbflow\\cache-key`` on Windows), created with mode 0600 and 32
  random bytes the first time a disk cache needs it.

Anyone who knows the key, or can write the key file, can make entries that run
code as whoever reads the cache with that key: a key file writable by other
users, or readable by everyone, is refused (:class:`~nbflow.errors.CacheKeyError`).

An entry file is one header line, then the payload::

    nbflow-result 2 <key id> <MAC> <payload length>\\n<payload>

The MAC is a keyed blake2b (256 bit) of the entry's cache key, the payload
length and the payload; the key id (a hash of the key, 64 bit) tells "signed
with another key" from "changed after it was written".
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CacheKeyError

__all__ = [
    "KEY_ENV", "KEY_FILE_ENV", "MAGIC", "Header", "Refused", "SigningKey", "check_file",
    "default_key_file", "key_file", "load_key", "open_entry", "parse_header", "seal",
]

KEY_ENV = "NBFLOW_CACHE_KEY"
KEY_FILE_ENV = "NBFLOW_CACHE_KEY_FILE"
#: the shortest key accepted (a key is text; 16 random characters is the least that is safe)
MIN_KEY_CHARS = 16
#: every entry file starts with these bytes, then its format version
MAGIC = b"nbflow-result "
VERSION = 2
#: longest header line of any version (for reading just the header of a file)
HEADER_MAX = 200


@dataclass(frozen=True)
class SigningKey:
    """The secret that signs cache entries, and where it came from (for messages)."""

    secret: bytes = field(repr=False)
    #: a hash of the secret, written into every entry
    id: str
    #: ``NBFLOW_CACHE_KEY`` or the key file's path
    source: str

    @classmethod
    def from_text(cls, text: str, source: str) -> SigningKey:
        """The key made from its text form; too short a text raises :class:`CacheKeyError`."""
        text = text.strip()
        if len(text) < MIN_KEY_CHARS:
            msg = (f"the cache signing key from {source} is {len(text)} characters long; use at "
                   f"least {MIN_KEY_CHARS} random ones, e.g. the output of "
                   "python -c 'import secrets; print(secrets.token_hex(32))'")
            raise CacheKeyError(msg)
        secret = hashlib.blake2b(text.encode(), digest_size=32, person=b"nbflow-cachekey").digest()
        key_id = hashlib.blake2b(secret, digest_size=8, person=b"nbflow-keyid").hexdigest()
        return cls(secret, key_id, source)

    def mac(self, name: str, payload: bytes | memoryview) -> str:
        """The MAC of entry ``name`` (its cache key) with this payload, as hex."""
        h = self.hasher(name, len(payload))
        h.update(payload)
        return h.hexdigest()

    def hasher(self, name: str, length: int) -> hashlib.blake2b:
        """A MAC in the making, for a payload of ``length`` bytes fed in with ``update``."""
        h = hashlib.blake2b(key=self.secret, digest_size=32, person=b"nbflow-entry")
        h.update(f"{VERSION} {name} {length}\0".encode())
        return h


def default_key_file() -> Path:
    """The per-user key file: under ``$XDG_CONFIG_HOME`` (``~/.config``), or ``%APPDATA%``."""
    if os.name == "nt" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "nbflow" / "cache-key"
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    try:
        root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    except RuntimeError as exc:  # no home directory (a bare container user)
        msg = (f"no home directory for the per-user cache signing key; set {KEY_ENV} or "
               f"{KEY_FILE_ENV}")
        raise CacheKeyError(msg) from exc
    return root / "nbflow" / "cache-key"


def key_file() -> Path:
    """The key file in use: ``NBFLOW_CACHE_KEY_FILE``, else :func:`default_key_file`."""
    named = os.environ.get(KEY_FILE_ENV)
    return Path(named).expanduser() if named else default_key_file()


def load_key(create: bool = True) -> SigningKey | None:
    """The signing key (see the module docstring), read now, never remembered.

    With ``create=False`` a missing key file gives None instead of a new key.
    Raises :class:`CacheKeyError` when the key is too short, or the key file cannot be
    read or created, or other users could write it (or everyone read it).
    """
    text = os.environ.get(KEY_ENV)
    if text:
        return SigningKey.from_text(text, KEY_ENV)
    path = key_file()
    if not path.exists():
        if not create:
            return None
        _create(path)
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read the cache signing key file {path}: {exc}"
        raise CacheKeyError(msg) from exc
    if os.name != "nt" and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IROTH):
        msg = (f"the cache signing key file {path} has mode {stat.S_IMODE(info.st_mode):o}: "
               "other users could read or replace the key and make cache entries that run "
               f"code as you; run chmod 600 {path}")
        raise CacheKeyError(msg)
    return SigningKey.from_text(text, str(path))


def _create(path: Path) -> None:
    """Write a new random key to ``path`` with mode 0600; a key written meanwhile wins."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cache-key-")  # mode 0600
    except OSError as exc:
        msg = (f"cannot create the cache signing key file {path}: {exc}; set {KEY_ENV} or "
               f"{KEY_FILE_ENV}")
        raise CacheKeyError(msg) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        # link, not rename: it fails if another process created the file first, and
        # then both use that one; the file is never seen half written
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    except OSError as exc:
        msg = f"cannot create the cache signing key file {path}: {exc}"
        raise CacheKeyError(msg) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


# -- entry files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """The first line of an entry file, parsed."""

    version: int
    #: the id of the key that signed it ("" for version 1: unsigned)
    key_id: str
    #: version 2: the MAC; version 1: an unkeyed checksum
    digest: str
    #: the payload's length, as written
    length: int
    #: bytes of the header line, newline included
    size: int


class Refused(Exception):
    """An entry that must not be loaded; the message says why."""


def seal(key: SigningKey, name: str, payload: bytes) -> bytes:
    """The header line (with its newline) of entry ``name`` holding ``payload``."""
    return b"%s%d %s %s %d\n" % (MAGIC, VERSION, key.id.encode(), key.mac(name, payload).encode(),
                                 len(payload))


def parse_header(data: bytes | memoryview) -> Header | None:
    """The header at the start of ``data``; None when it is not an nbflow entry's."""
    head = bytes(data[:HEADER_MAX])
    line, sep, _ = head.partition(b"\n")
    if not sep or not line.startswith(MAGIC):
        return None
    fields = line[len(MAGIC):].split(b" ")
    try:
        if fields[0] == b"2" and len(fields) == 4:
            key_id, digest, length = (f.decode("ascii") for f in fields[1:])
            if len(key_id) == 16 and len(digest) == 64:
                int(key_id, 16), int(digest, 16)
                return Header(2, key_id, digest, int(length), len(line) + 1)
        elif fields[0] == b"1" and len(fields) == 3:
            digest, length = (f.decode("ascii") for f in fields[1:])
            int(digest, 16)
            return Header(1, "", digest, int(length), len(line) + 1)
    except ValueError:  # not hex, not a number, not ASCII
        return None
    return None


def open_entry(key: SigningKey, name: str, data: bytes) -> memoryview:
    """The payload of entry ``name``, after checking its MAC; raises :class:`Refused`."""
    header = _checked_header(key, parse_header(data), len(data))
    payload = memoryview(data)[header.size:]
    _check_mac(key.mac(name, payload), header)
    return payload


def check_file(key: SigningKey, name: str, path: Path) -> None:
    """Check entry file ``path`` of ``name`` without loading it: the header, then the MAC
    of the payload read in chunks. Raises :class:`Refused` (or ``OSError``)."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        header = _checked_header(key, parse_header(f.read(HEADER_MAX)), size)
        f.seek(header.size)
        h = key.hasher(name, header.length)
        while chunk := f.read(1 << 20):
            h.update(chunk)
    _check_mac(h.hexdigest(), header)


def _checked_header(key: SigningKey, header: Header | None, file_size: int) -> Header:
    if header is None:
        raise Refused("it is not an nbflow cache entry (no nbflow-result header)")
    if header.version == 1:
        raise Refused("it was written by an older nbflow, without a MAC")
    if file_size - header.size != header.length:
        raise Refused(f"it is truncated or padded ({file_size - header.size} bytes of "
                      f"payload, {header.length} expected)")
    if header.key_id != key.id:
        raise Refused(f"it was signed with another key (key id {header.key_id}; this process "
                      f"uses {key.id} from {key.source})")
    return header


def _check_mac(mac: str, header: Header) -> None:
    if not hmac.compare_digest(mac, header.digest):
        raise Refused("its MAC does not match: it was changed after it was written (forged or "
                      "damaged), or belongs to another cache key")
