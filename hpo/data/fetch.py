"""``hpo data fetch``: download the public datasets the seed studies name, into the folder layout the studies
point at (``data/`` at the project root, i.e. ``../data/...`` from ``studies/``).

Only the CLI calls this module (nothing downloads at trial time). Downloads use the standard library
(:mod:`urllib`), over https (plain http only to a loopback host, for tests), with:

- checksums: a file with a pinned sha256 (and size) is verified after download; one whose digest could not be
  pinned when the registry was written (no network then) is trusted on first use: its digest is written next to
  it (``FILE.sha256``) and every later fetch verifies the file against that;
- atomic writes: bytes go to ``FILE.part`` and are renamed to ``FILE`` only once complete and verified, so a
  partial or wrong file never sits under the final name (a checksum mismatch leaves nothing behind);
- resume: an interrupted download keeps its ``.part``; the next attempt (in the same call, after a cut
  connection, or a later ``hpo data fetch``) asks for the rest with an HTTP ``Range`` request;
- a progress bar on a terminal (tqdm), a one-line error when the host cannot be reached (exit 2);
- zip extraction that refuses members outside the target folder (absolute paths, ``..``, links).

The registry's URLs can be redirected to a mirror (``HPO_DATA_MIRROR`` or ``mirror=``): a file is then fetched
from ``MIRROR/PATH`` (e.g. ``https://mirror.example/METR-LA/metr-la.h5``), so a mirror is a fetched data root
served over https.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import logging
import os
import socket
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from hpo.errors import DataError, UsageError, unknown_name_message

log = logging.getLogger(__name__)

DATA_ENV = "HPO_DATA"  # the data root (default: ./data, where the studies look)
MIRROR_ENV = "HPO_DATA_MIRROR"  # a base URL replacing every registry URL: MIRROR/PATH
DEFAULT_ROOT = "data"
CHUNK = 1 << 16
TIMEOUT_S = 30.0
RETRIES = 3  # resumed attempts after a cut connection, within one fetch
USER_AGENT = "fusion-hpo-data-fetch"


@dataclass(frozen=True)
class Remote:
    """One file of a dataset: where it lands (``path``, relative to the data root, POSIX), where it comes from,
    and what it must be. ``sha256``/``size`` are None where they could not be pinned (verified on first download
    and stored next to the file). ``unzip``: extract this member of the zip (``"*"``: every member) to
    ``extract_to`` (a file for one member, a folder for ``"*"``), relative to the data root. ``magic``: what the
    file must start with, checked before it is renamed (where no checksum is pinned, a login or quota page served
    in its place would otherwise be trusted on first use)."""

    path: str
    url: str
    sha256: str | None = None
    size: int | None = None
    unzip: str | None = None
    extract_to: str | None = None
    magic: bytes | None = None  # the file's first bytes (an HTML error page in its place is refused before renaming)


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    source: str  # where the registry's URLs come from (for `hpo data list` and the report)
    files: tuple[Remote, ...]
    studies: tuple[str, ...] = ()
    note: str = ""

    @property
    def pinned(self) -> bool:
        return all(f.sha256 for f in self.files)

    def outputs(self) -> list[str]:
        """The paths (relative to the data root) a study reads: extracted files, else the downloads."""
        return [f.extract_to or f.path for f in self.files]


_DEEPDTA = "https://raw.githubusercontent.com/hkmztrk/DeepDTA/a546a8433a6822e958f36171c4356ad6f414d623/data/"
_DCRNN = "https://raw.githubusercontent.com/liyaguang/DCRNN/602afd9d767d3aa1c9b3eac51710d6aeee12c227/data/sensor_graph/"
_GDRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
HDF5 = b"\x89HDF\r\n\x1a\n"
ZIP = b"PK\x03\x04"


def _deepdta(name: str, digests: dict[str, tuple[str, int]]) -> tuple[Remote, ...]:
    return tuple(Remote(f"{name}/{p}", f"{_DEEPDTA}{name}/{p}", h, n) for p, (h, n) in digests.items())


# sha256 and sizes of the GitHub files were computed here from the git objects of the pinned commits (DeepDTA
# a546a84, DCRNN 602afd9), read from stored mirrors of those repositories; the same digests as the copies in
# shared/data. The Google Drive and figshare files could not be read here (no network): their digests are
# trusted on first download and stored next to them.
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        "dft_3d", "JARVIS-DFT 3D (76k crystals, 12-12-2022 release), the file jarvis-tools' data('dft_3d') loads",
        "figshare (jarvis-tools jarvis/db/figshare.py, doi:10.6084/m9.figshare.6815699)",
        (Remote("jdft_3d-12-12-2022.json.zip", "https://ndownloader.figshare.com/files/38521619",
                unzip="jdft_3d-12-12-2022.json", extract_to="dft_3d.json", magic=ZIP),),
        studies=("hse_bandgap", "optb88vdw_bandgap"),
        note="checksum not pinned (no network when written): verified on first download, then stored"),
    Dataset(
        "metr_la", "METR-LA (207 sensors, 5-minute speeds, Mar-Jun 2012): DCRNN's metr-la.h5 and adj_mx.pkl",
        "DCRNN README's Google Drive folder (github.com/liyaguang/DCRNN) and its data/sensor_graph at 602afd9",
        (Remote("METR-LA/metr-la.h5", _GDRIVE + "1pAGRfzMx6K9WWsfDcD1NMbIif0T0saFC", magic=HDF5),
         Remote("METR-LA/adj_mx.pkl", _DCRNN + "adj_mx.pkl",
                "a35687c6e15aa228dc45027b0ed2a0ea0f4ec78f573deb992c595092d12f61b3", 680459)),
        studies=("metr_la",),
        note="metr-la.h5: checksum not pinned (no network when written): verified on first download, then stored"),
    Dataset(
        "pems_bay", "PEMS-BAY (325 sensors, 5-minute speeds, Jan-May 2017): DCRNN's pems-bay.h5 and adj_mx_bay.pkl",
        "DCRNN README's Google Drive folder (github.com/liyaguang/DCRNN) and its data/sensor_graph at 602afd9",
        (Remote("PEMS-BAY/pems-bay.h5", _GDRIVE + "1wD-mHlqAb2mtHOe_68fZvDh1LpDegMMq", magic=HDF5),
         Remote("PEMS-BAY/adj_mx_bay.pkl", _DCRNN + "adj_mx_bay.pkl",
                "116275f5704d0d492018e14c047f7ae5004385b450aa907f88424055a4a97370", 1681480)),
        studies=("pems_bay",),
        note="pems-bay.h5: checksum not pinned (no network when written): verified on first download, then stored"),
    Dataset(
        "davis", "Davis kinase affinities (68 drugs x 442 proteins, Kd in nM), DeepDTA's folder with official folds",
        "github.com/hkmztrk/DeepDTA data/davis at a546a84",
        _deepdta("davis", {
            "Y": ("9855c4f234ec6dd18295b0e0cd6ee54214cafa908c6eb1d447b47d454fc0294a", 240605),
            "ligands_can.txt": ("141094d99510a52091d2ea1b05be7c1f66b2c5fcaeeeb261eaf4cbf2128bde6d", 5306),
            "proteins.txt": ("187cedeee10cd3b58af915a2861a5ed0c4ff42a2d728f4dea5e0b47e3d75b291", 355211),
            "folds/train_fold_setting1.txt": ("bb7a63b2178c40a4e2417bc701b95511407787fa5eabb6a43a695fe6bd722f56", 166040),
            "folds/test_fold_setting1.txt": ("c97589fa2fae318b01870854af0ab6fdd155dd38524cc6ac1d0319418ac6d568", 33252),
        }),
        studies=("davis",)),
    Dataset(
        "kiba", "KIBA scores (2,111 drugs x 229 proteins), DeepDTA's folder with official folds",
        "github.com/hkmztrk/DeepDTA data/kiba at a546a84",
        _deepdta("kiba", {
            "Y": ("53857b84218ba3d60293c70ab79e2abd83d615d06218c73c150f6dfb4c7134a6", 3867510),
            "ligands_can.txt": ("a95797abaf31b17bd2471dbf3e3476f588d5a79797903cc156528f66e55c963b", 165908),
            "proteins.txt": ("2ba9dbc2959d88b0740aaf28828c4c611c2dbd1c2019547eb2ec1c3daa192604", 170137),
            "folds/train_fold_setting1.txt": ("da74eeeb2c3e7d52a2fd6daac0dc105bba097c222337230eec69d9fd7e1c301e", 695885),
            "folds/test_fold_setting1.txt": ("92801eec2caddf950235c6c6a46d999d2eeeaa6d35cbeffd68c72a5cf54b208d", 139047),
        }),
        studies=("kiba",)),
)}


def data_root(directory: str | os.PathLike | None = None) -> Path:
    """``--dir``, else ``$HPO_DATA``, else ``./data`` (where the studies' ``../data/...`` paths point)."""
    return Path(directory or os.environ.get(DATA_ENV) or DEFAULT_ROOT).expanduser()


def get_dataset(name: str, registry: dict[str, Dataset] | None = None) -> Dataset:
    registry = DATASETS if registry is None else registry
    if name not in registry:
        raise UsageError(f"dataset: {unknown_name_message('dataset', name, registry)}")
    return registry[name]


# ---- URLs ---------------------------------------------------------------------------------------------------

def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str = "url") -> str:
    """https anywhere; http only to a loopback host (the tests' server); nothing else (file:, ftp:, ...)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and _loopback(parts.hostname):
        return url
    raise UsageError(f"{what}: must be an https URL (http only to a loopback host), but got {url!r}")


def source_url(remote: Remote, mirror: str | None) -> str:
    if mirror:
        return f"{mirror.rstrip('/')}/{urllib.parse.quote(remote.path)}"
    return remote.url


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (figshare and Google Drive redirect to their storage) only to allowed URLs."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(urllib.parse.urljoin(req.full_url, newurl), "redirect")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(url: str) -> urllib.request.OpenerDirector:
    """urllib's default handlers (proxies from the environment included, never for a loopback host), with the
    checked redirects."""
    if _loopback(urllib.parse.urlsplit(url).hostname):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}), _CheckedRedirects)
    return urllib.request.build_opener(_CheckedRedirects)


# ---- one file -----------------------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def expected_digest(path: Path, remote: Remote) -> str | None:
    """The pinned sha256, else the one stored next to the file at its first download, else None."""
    if remote.sha256:
        return remote.sha256
    side = _sidecar(path)
    if side.is_file():
        words = side.read_text().split()
        return words[0] if words else None
    return None


def _starts_with(path: Path, magic: bytes | None) -> bool:
    if not magic:
        return True
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def is_current(path: Path, remote: Remote) -> bool:
    """The file is there and verifies (pinned digest, or the digest stored at its first download)."""
    if not path.is_file():
        return False
    want = expected_digest(path, remote)
    if remote.size is not None and path.stat().st_size != remote.size:
        return False
    return want is not None and sha256_of(path) == want


class _Cut(Exception):
    """The connection ended before the announced length: resume with a Range request."""


Progress = Callable[[str, int | None, int], "object"]


def _no_bar(desc: str, total: int | None, initial: int):
    return None


def terminal_bar(desc: str, total: int | None, initial: int):
    """A tqdm bar on a terminal (stderr), nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                dynamic_ncols=True, leave=False)


def _attempt(url: str, part: Path, desc: str, progress: Progress, timeout: float) -> None:
    """One request: append the rest of the file to ``part`` (from its current size, by Range), or start over
    when the server sends the whole file. Raises _Cut when the body ends short."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = _opener(url).open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is no prefix the server knows (or already complete): restart
            e.close()
            part.unlink()
            return _attempt(url, part, desc, progress, timeout)
        raise
    with resp:
        status = resp.status
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "text/html" and not part.name.endswith((".html.part", ".htm.part")):
            raise DataError(f"{url}: the server sent a web page (text/html) instead of the file (a login, quota or "
                            f"confirmation page?); not saved under {part.name[:-5]}")
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        mode = "ab"
        if status == 206:
            start = _range_start(resp.headers.get("Content-Range", ""))
            if start != have:
                raise DataError(f"{url}: the server resumed at byte {start}, not at {have}")
            total = have + length if length is not None else None
        else:  # 200: the whole file (the server ignored the Range)
            if have:
                log.info("%s: the server does not resume downloads; starting over", url)
            have, mode = 0, "wb"
            total = length
        bar = progress(desc, total, have)
        got = have
        try:
            part.parent.mkdir(parents=True, exist_ok=True)  # only once the server answered: offline, nothing is made
            with open(part, mode) as f:
                while True:
                    try:
                        block = resp.read(CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
                        raise _Cut(str(e) or type(e).__name__) from e
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and got < total:
            raise _Cut(f"connection closed after {got} of {total} bytes")


def _range_start(content_range: str) -> int | None:
    # "bytes 100-999/1000"
    try:
        unit, rest = content_range.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def download(url: str, path: Path, remote: Remote, *, desc: str = "", progress: Progress = _no_bar,
             retries: int = RETRIES, timeout: float = TIMEOUT_S) -> str:
    """Download ``url`` to ``path`` through ``path.part`` (resumed, verified, renamed); return its sha256.
    A checksum or size mismatch deletes the partial file and raises :class:`DataError`."""
    check_url(url)
    part = _part(path)
    for attempt in range(retries + 1):
        try:
            _attempt(url, part, desc or path.name, progress, timeout)
            break
        except _Cut as e:
            if attempt == retries:
                raise DataError(f"{url}: download cut off ({e}); {part.stat().st_size if part.exists() else 0} bytes "
                                f"kept in {part}, run the same command again to resume") from None
            log.info("%s: %s; resuming (attempt %d of %d)", url, e, attempt + 2, retries + 1)
        except urllib.error.HTTPError as e:
            raise DataError(f"{url}: the server answered HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise DataError(f"cannot download {url}: {reason} (offline? the host cannot be reached; "
                            f"copy the files under {path.parent} by hand or set {MIRROR_ENV})") from None
    size = part.stat().st_size
    digest = sha256_of(part)
    want = expected_digest(path, remote)
    problem = None
    if not _starts_with(part, remote.magic):
        problem = f"does not start with {remote.magic!r} (not the expected file format)"
    elif remote.size is not None and size != remote.size:
        problem = f"size {size} bytes, expected {remote.size}"
    elif want is not None and digest != want:
        problem = f"sha256 {digest}, expected {want}"
        if not remote.sha256:
            problem += (f" (stored at its first download in {_sidecar(path).name}; delete that file to accept "
                        "the new one)")
    if problem:
        part.unlink()
        raise DataError(f"{url}: {problem}; the download was deleted (nothing kept under {path})")
    os.replace(part, path)
    if remote.sha256 is None:
        _write_atomic(_sidecar(path), f"{digest}  {path.name}\n")
    return digest


# ---- zips ---------------------------------------------------------------------------------------------------

def _safe_member(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath:
    name = info.filename
    mode = info.external_attr >> 16
    p = PurePosixPath(name)
    if (not name or name.startswith(("/", "\\")) or "\\" in name or ".." in p.parts or ":" in p.parts[0]
            or stat.S_ISLNK(mode)):
        raise DataError(f"{archive}: member {name!r} would be written outside the target folder (absolute path, "
                        "'..' or a link); nothing extracted")
    return p


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zf.open(info) as src, open(tmp, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def safe_unzip(archive: Path, member: str, target: Path) -> list[Path]:
    """Extract ``member`` to the file ``target``, or (``member == "*"``) every member under the folder ``target``.
    Every member is checked first (no absolute path, no ``..``, no link, nothing resolving outside ``target``):
    one bad member refuses the whole archive. Each file is written atomically."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise DataError(f"{archive}: not a zip archive ({e})") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            _safe_member(info, archive)
        if member != "*":
            matches = [i for i in infos if i.filename == member]
            if not matches:
                names = [i.filename for i in infos][:5]
                raise DataError(f"{archive}: must hold the member {member!r}, but got {names}")
            _extract_one(zf, matches[0], target)
            return [target]
        root = target.resolve()
        out = []
        for info in infos:
            dest = (target / _safe_member(info, archive)).resolve()
            if root != dest and root not in dest.parents:
                raise DataError(f"{archive}: member {info.filename!r} would be written outside {target}; "
                                "nothing more extracted")
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            _extract_one(zf, info, dest)
            out.append(dest)
        return out


# ---- a dataset ----------------------------------------------------------------------------------------------

@dataclass
class FetchResult:
    dataset: str
    root: Path
    downloaded: list[str] = field(default_factory=list)  # relative paths fetched now
    present: list[str] = field(default_factory=list)  # already there and verified
    extracted: list[str] = field(default_factory=list)
    unpinned: list[str] = field(default_factory=list)  # digests stored on first download (trust on first use)


def fetch(name: str, directory: str | os.PathLike | None = None, *, mirror: str | None = None,
          registry: dict[str, Dataset] | None = None, progress: Progress = _no_bar, retries: int = RETRIES,
          timeout: float = TIMEOUT_S) -> FetchResult:
    """Download dataset ``name`` under the data root (``directory``, ``$HPO_DATA`` or ``./data``): files already
    there and verified are kept, the others downloaded (resumed, verified, renamed) and extracted."""
    ds = get_dataset(name, registry)
    if mirror:
        check_url(mirror, "--mirror")
    else:
        mirror = os.environ.get(MIRROR_ENV) or None
        if mirror:
            check_url(mirror, MIRROR_ENV)
    root = data_root(directory)
    res = FetchResult(ds.name, root)
    for remote in ds.files:
        path = root / PurePosixPath(remote.path)
        if is_current(path, remote):
            res.present.append(remote.path)
        elif (path.is_file() and expected_digest(path, remote) is None and remote.size in (None, path.stat().st_size)
              and _starts_with(path, remote.magic)):
            # put there by hand (a download never leaves a file under its final name): kept, trusted on first use
            _write_atomic(_sidecar(path), f"{sha256_of(path)}  {path.name}\n")
            log.info("%s: already there (no pinned checksum): kept, its sha256 stored in %s", path, _sidecar(path).name)
            res.present.append(remote.path)
            res.unpinned.append(remote.path)
        else:
            if path.is_file():
                log.warning("%s does not match its checksum: downloading it again", path)
            url = source_url(remote, mirror)
            log.info("downloading %s -> %s", url, path)
            download(url, path, remote, desc=remote.path, progress=progress, retries=retries, timeout=timeout)
            res.downloaded.append(remote.path)
            if remote.sha256 is None:
                res.unpinned.append(remote.path)
        if remote.unzip:
            target = root / PurePosixPath(remote.extract_to or ".")
            if remote.unzip == "*" or remote.path in res.downloaded or not target.is_file():
                safe_unzip(path, remote.unzip, target)
                res.extracted.append(remote.extract_to or ".")
    return res


def status(ds: Dataset, directory: str | os.PathLike | None = None) -> str:
    """``present`` (every file there), ``partial`` (some), ``absent``; without reading whole files."""
    root = data_root(directory)
    there = [(root / PurePosixPath(p)).is_file() for p in ds.outputs()]
    return "present" if all(there) else ("partial" if any(there) else "absent")
