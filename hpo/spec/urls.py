"""Storage URLs as a study file or a flag writes them: what makes one acceptable (:func:`url_rule`,
:func:`check_url`: no secret in the URL, a known form) and :func:`redact`, the one redaction used wherever a
URL is printed, logged, exported or reported. Opening a URL is :mod:`hpo.store.storage`'s job; the rules live
here, in the spec layer, because the study file's ``storage:`` key is checked with them."""

from __future__ import annotations

from urllib.parse import urlsplit

from hpo.errors import UsageError

_SECRET_WORDS = ("password", "passwd", "passphrase", "pwd", "secret", "token", "api_key", "apikey", "access_key",
                 "private_key", "credential", "sslpassword")
_SECRET_NAMES = ("pass", "pw", "key", "auth")
_NOT_SECRET = ("password_env", "passfile")  # name a variable / a file, never hold the secret


def _secret_query_keys(query: str) -> list[str]:
    """The keys of a URL query (or fragment) that would hold a secret (case-insensitive, decoded)."""
    from urllib.parse import unquote_plus

    found = []
    for part in query.replace(";", "&").split("&"):
        key = unquote_plus(part.split("=", 1)[0]).strip().lower().replace("-", "_")
        if key and key not in _NOT_SECRET and (key in _SECRET_NAMES or any(w in key for w in _SECRET_WORDS)):
            found.append(key)
    return found


def redact(url: str) -> str:
    """The URL with any secret replaced by ***: the user-info password and the value of every
    password-like query key (:func:`_secret_query_keys`). The one redaction used wherever a storage URL
    is printed, logged, exported or reported; it never fails (an unparsable URL is masked by pattern)."""
    import re
    from urllib.parse import unquote_plus

    def mask_query(query: str) -> str:
        out = []
        for part in re.split(r"([&;])", query):
            key = unquote_plus(part.split("=", 1)[0]) if part not in ("&", ";") else ""
            out.append(part.split("=", 1)[0] + "=***" if key and _secret_query_keys(key) else part)
        return "".join(out)

    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    userinfo = ""
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:  # user:password@ (a password may hold unencoded / ? #: mask up to the last @)
        userinfo, rest = rest[: rest.index(":")] + ":***@", rest[at + 1:]
    cut = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
    netloc, tail = userinfo + rest[:cut], rest[cut:]
    tail, hash_, fragment = tail.partition("#")
    path, q, query = tail.partition("?")
    return f"{scheme}{sep}{netloc}{path}{q}{mask_query(query)}{hash_}{mask_query(fragment)}"


def check_url(url: str) -> None:
    """Raise :class:`UsageError` (one line, the URL redacted) for URLs that embed a secret (a user-info
    password, or a password-like query key such as ``?password=`` / ``?token=``) or have an unknown scheme."""
    rule = url_rule(url)
    if rule is not None:
        raise UsageError(f"storage URL {redact(url)}: {rule}")


def url_rule(url: str) -> str | None:
    """What a storage URL breaks (the rule, without the URL), or None: for :func:`check_url` and the study
    file's ``storage:`` key."""
    hint = ("set PGPASSWORD in the environment, or name a variable with ?password_env=NAME")
    if "://" not in url:
        return "must look like sqlite:///runs/hpo.db, postgresql+psycopg://user@host/db or journal://path.log"
    if any(c in url for c in "\r\n\x00"):
        return "must be one line without control characters"
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError as e:
        return f"must be a valid URL ({e})"
    if not password and not url.startswith("journal://"):  # SQLAlchemy reads user:pa/ss@host as a password too
        try:
            from sqlalchemy.engine import make_url

            password = make_url(url).password
        except Exception:  # unparsable for SQLAlchemy: opening it says why
            password = None
    if password:
        return ("a password must not be written in the URL (it would end up in shell history, YAML files and logs); " + hint)
    keys = _secret_query_keys(parts.query) + _secret_query_keys(parts.fragment)
    if keys:
        return (f"a password must not be written in the URL, not even as a query key ({', '.join(sorted(set(keys)))}: it would end up "
                "in shell history, YAML files and logs); " + hint)
    return None
