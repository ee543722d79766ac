"""Where a cassette lives: a SQLite file, or a named cassette in a PostgreSQL store.

A target is what a user types where a CASSETTE goes: a path, or a SQLAlchemy URL. A URL
names its cassette in the query (`?cassette=NAME`) or the caller passes the name apart
(`open_store(target, name)`); `in_progress=true` in the query asks for interactions still
being recorded too. Credentials come from the URL or libpq's PG* environment variables
(the driver reads PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE for what the URL leaves
out). Rules:
- `str(location)` never holds a password: it is what every message and log line shows,
  and what is handed on to other processes (the CLI moves a URL's password into
  PGPASSWORD, so it never shows in a process list either);
- a target that looks like a URL and cannot be used is a `CassetteError` of one line that
  says why, without the password;
- everything else is a path, exactly as today.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sse_recorder.errors import CassetteError

if TYPE_CHECKING:  # SQLAlchemy only once a URL is parsed: a path needs none of it
    from sqlalchemy.engine import URL

# scheme://... : what a path never looks like (a drive letter has no '//').
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A cassette name is a PostgreSQL schema name: printable, short, not a system schema. No
# dot: SQLAlchemy reads a dotted schema as database.schema ("cross-database references are
# not implemented"), so a name like v1.2 could be checked but never stored.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$")
_RESERVED = re.compile(r"^(pg_|information_schema$|public$)", re.IGNORECASE)
# Dialect names a URL may use, and the SQLAlchemy driver each is opened with.
DRIVERS = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
           "postgresql+asyncpg": "postgresql+asyncpg"}
_OPTIONS = ("cassette", "in_progress")  # query keys that are ours, not the driver's
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def looks_like_url(target: str) -> bool:
    """`scheme://...`: a store URL (or a mistyped one), never a path."""
    return bool(_URL.match(target))


@dataclass(frozen=True)
class Location:
    """A cassette in a server store: the URL to connect with (no options of ours left in
    it) and the cassette's name. `str()` hides the password."""

    url: URL
    name: str | None
    in_progress: bool = False

    def __str__(self) -> str:
        """The URL without its password (usable as is where PGPASSWORD holds it)."""
        shown = self.store
        if self.name is not None:
            shown += ("&" if "?" in shown else "?") + f"cassette={self.name}"
        if self.in_progress:
            shown += "&in_progress=true"
        return shown

    @property
    def store(self) -> str:
        """The store without the cassette or the password, for messages about the store."""
        return _without_password(self.url)

    @property
    def suffix(self) -> str:
        """As `Path.suffix`: code that tells files apart by suffix sees none here."""
        return ""

    @property
    def password(self) -> str | None:
        return self.url.password if isinstance(self.url.password, str) else None

    def named(self, name: str | None) -> Location:
        """This store with cassette `name` (checked)."""
        return Location(self.url, check_name(name, self) if name is not None else None,
                        self.in_progress)

    def scrub(self, message: str) -> str:
        """`message` without this URL's password, whatever a driver put in it."""
        password = self.password
        return message.replace(password, "***") if password else message


def check_name(name: str, where: object) -> str:
    if not _NAME.match(name) or _RESERVED.match(name):
        raise CassetteError(
            f"{where}: {name!r} is not a cassette name: up to 63 letters, digits, '_' or "
            "'-' (no '.'), not starting with pg_ nor named public or information_schema")
    return name


def locate(target: str | Path | Location, name: str | None = None) -> Path | Location:
    """A path (unchanged) or the `Location` a URL names; `name` overrides the URL's."""
    if isinstance(target, Location):
        return target.named(name) if name is not None else target
    if isinstance(target, Path) or not looks_like_url(target):
        if name is not None:
            raise CassetteError(f"{target}: a cassette name ({name}) is for a store URL; "
                                "a SQLite file holds one cassette")
        return Path(target)
    url = _parse(target)
    options = {key: url.query[key] for key in _OPTIONS if key in url.query}
    shown = _without_password(url.difference_update_query(_OPTIONS))
    driver = DRIVERS.get(url.drivername)
    if driver is None:
        raise CassetteError(f"{shown}: unsupported store URL scheme {url.drivername}:// "
                            "(a store URL is postgresql://... or postgresql+asyncpg://...; "
                            "anything without scheme:// is a file path)")
    flags = options.get("in_progress", "false")
    if not isinstance(flags, str) or flags.lower() not in _TRUE | _FALSE:
        raise CassetteError(f"{shown}: in_progress takes true or false")
    given = options.get("cassette")
    if given is not None and not isinstance(given, str):
        raise CassetteError(f"{shown}: the cassette is named twice in the URL")
    location = Location(url.difference_update_query(_OPTIONS).set(drivername=driver), None,
                        flags.lower() in _TRUE)
    chosen = name if name is not None else given
    return location.named(chosen) if chosen is not None else location


def _parse(target: str) -> URL:
    """SQLAlchemy's URL, or one line that repeats no part of the target after '//' (where a
    password would be)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(target)
    except (ArgumentError, ValueError):
        scheme = target.split("://", 1)[0]
        raise CassetteError(f"{scheme}://...: not a valid store URL (expected "
                            f"{scheme}://USER:PASSWORD@HOST:PORT/DATABASE?cassette=NAME)"
                            ) from None


def _without_password(url: URL) -> str:
    """The URL as text with no password at all (`URL.set` cannot remove one)."""
    from sqlalchemy.engine import URL

    return URL.create(url.drivername, url.username, None, url.host, url.port, url.database,
                      url.query).render_as_string(hide_password=False)


def same_file(one: Path, other: Path) -> bool:
    """Whether two paths name one file: the same resolved path (a symlink, `./x`), or the
    same inode (a hard link)."""
    try:
        return one.resolve() == other.resolve() or (
            one.exists() and other.exists() and one.samefile(other))
    except OSError:
        return False
