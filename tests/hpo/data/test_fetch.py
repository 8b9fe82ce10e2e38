"""hpo.data.fetch and `hpo data`: downloads from a real HTTP server on loopback (Range support, cut connections,
redirects): verified, resumed, atomic, refused on a bad checksum / scheme / zip member, one-line offline error."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hpo.data import fetch as F
from hpo.errors import DataError, UsageError

ROOT = Path(__file__).resolve().parents[3]


class Server:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 with Range support; ``cut`` (path -> n): the next answer for
    that path announces the whole length but sends n bytes and closes; ``redirect`` (path -> URL): 302;
    ``ignore_range``: always 200 with the whole file. ``requests`` records (path, Range header)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.redirect: dict[str, str] = {}
        self.ctype: dict[str, str] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                srv.requests.append((path, rng))
                if path in srv.redirect:
                    self.send_response(302)
                    self.send_header("Location", srv.redirect[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path not in srv.files:
                    self.send_error(404)
                    return
                body = srv.files[path]
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not srv.ignore_range:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                if path in srv.ctype:
                    self.send_header("Content-Type", srv.ctype[path])
                self.end_headers()
                n = srv.cut.pop(path, None)
                if n is not None:
                    self.wfile.write(body[start:start + n])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with Server() as s:
        yield s


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def registry(*files: F.Remote, name: str = "toyset") -> dict[str, F.Dataset]:
    return {name: F.Dataset(name, "a test dataset", "loopback", tuple(files))}


BODY = bytes(range(256)) * 800  # 200 KiB: several chunks


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_fetch_verifies_renames_and_keeps_a_verified_file(server, tmp_path):
    server.files["set/a.bin"] = BODY
    server.files["set/sub/b.txt"] = b"hello\n"
    reg = registry(F.Remote("set/a.bin", "https://unused.example/a", sha(BODY), len(BODY)),
                   F.Remote("set/sub/b.txt", "https://unused.example/b", sha(b"hello\n"), 6))
    res = F.fetch("toyset", tmp_path / "data", mirror=server.url, registry=reg)
    assert res.downloaded == ["set/a.bin", "set/sub/b.txt"] and not res.unpinned
    assert (tmp_path / "data/set/a.bin").read_bytes() == BODY
    assert (tmp_path / "data/set/sub/b.txt").read_bytes() == b"hello\n"
    assert leftovers(tmp_path / "data") == ["set/a.bin", "set/sub/b.txt"]  # no .part, no sidecar for pinned files
    n = len(server.requests)
    again = F.fetch("toyset", tmp_path / "data", mirror=server.url, registry=reg)
    assert again.present == ["set/a.bin", "set/sub/b.txt"] and not again.downloaded
    assert len(server.requests) == n  # nothing fetched again
    (tmp_path / "data/set/a.bin").write_bytes(b"garbled")  # a damaged copy is replaced
    third = F.fetch("toyset", tmp_path / "data", mirror=server.url, registry=reg)
    assert third.downloaded == ["set/a.bin"] and (tmp_path / "data/set/a.bin").read_bytes() == BODY


def test_checksum_mismatch_is_refused_and_leaves_nothing(server, tmp_path):
    server.files["x.bin"] = BODY
    reg = registry(F.Remote("x.bin", "https://unused.example/x", sha(b"something else")))
    with pytest.raises(DataError, match="sha256 .*expected .*deleted"):
        F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert leftovers(tmp_path) == []
    reg = registry(F.Remote("x.bin", "https://unused.example/x", sha(BODY), len(BODY) + 1))
    with pytest.raises(DataError, match="size"):
        F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert leftovers(tmp_path) == []


def test_a_cut_connection_keeps_the_part_and_the_next_fetch_resumes_by_range(server, tmp_path):
    server.files["x.bin"] = BODY
    server.cut["x.bin"] = 70_000
    reg = registry(F.Remote("x.bin", "https://unused.example/x", sha(BODY), len(BODY)))
    with pytest.raises(DataError, match="cut off.*resume"):
        F.fetch("toyset", tmp_path, mirror=server.url, registry=reg, retries=0)
    assert not (tmp_path / "x.bin").exists()  # never a partial file under the final name
    assert (tmp_path / "x.bin.part").stat().st_size == 70_000
    F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert server.requests[-1] == ("x.bin", "bytes=70000-")
    assert (tmp_path / "x.bin").read_bytes() == BODY and leftovers(tmp_path) == ["x.bin"]


def test_a_cut_connection_is_resumed_within_one_fetch(server, tmp_path):
    server.files["x.bin"] = BODY
    server.cut["x.bin"] = 1000
    reg = registry(F.Remote("x.bin", "https://unused.example/x", sha(BODY), len(BODY)))
    F.fetch("toyset", tmp_path, mirror=server.url, registry=reg, retries=1)
    assert server.requests == [("x.bin", None), ("x.bin", "bytes=1000-")]
    assert (tmp_path / "x.bin").read_bytes() == BODY


def test_a_server_without_range_support_starts_over(server, tmp_path):
    server.files["x.bin"] = BODY
    server.ignore_range = True
    (tmp_path / "x.bin.part").write_bytes(b"stale bytes of another attempt")
    reg = registry(F.Remote("x.bin", "https://unused.example/x", sha(BODY), len(BODY)))
    F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert (tmp_path / "x.bin").read_bytes() == BODY and leftovers(tmp_path) == ["x.bin"]


def test_an_unpinned_file_stores_its_digest_and_is_verified_against_it_later(server, tmp_path):
    server.files["x.bin"] = BODY
    reg = registry(F.Remote("x.bin", "https://unused.example/x"))
    res = F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert res.unpinned == ["x.bin"]
    assert (tmp_path / "x.bin.sha256").read_text().split() == [sha(BODY), "x.bin"]
    (tmp_path / "x.bin").write_bytes(b"damaged")
    server.files["x.bin"] = b"the server now serves other bytes"
    with pytest.raises(DataError, match="sha256"):  # checked against the digest of the first download
        F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert (tmp_path / "x.bin").read_bytes() == b"damaged" and not (tmp_path / "x.bin.part").exists()


def test_a_web_page_or_a_wrong_format_in_place_of_the_file_is_refused(server, tmp_path):
    page = b"<html>Google Drive can't scan this file for viruses</html>"
    server.files["x.h5"] = page
    server.ctype["x.h5"] = "text/html; charset=utf-8"
    reg = registry(F.Remote("x.h5", "https://unused.example/x", magic=F.HDF5))  # unpinned: trusted on first use
    with pytest.raises(DataError, match="web page"):
        F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert leftovers(tmp_path) == []
    server.ctype.clear()  # the same bytes as application/octet-stream: the format check refuses them
    with pytest.raises(DataError, match="not the expected file format"):
        F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert leftovers(tmp_path) == []  # no digest of a wrong file stored either
    server.files["x.h5"] = F.HDF5 + b"rest of an hdf5 file"
    F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert leftovers(tmp_path) == ["x.h5", "x.h5.sha256"]


def test_a_file_put_there_by_hand_is_kept_when_nothing_pins_it(server, tmp_path):
    (tmp_path / "x.h5").write_bytes(F.HDF5 + b"my own copy")
    reg = registry(F.Remote("x.h5", "https://unused.example/x", magic=F.HDF5))
    res = F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert res.present == ["x.h5"] and server.requests == []
    assert (tmp_path / "x.h5.sha256").read_text().split()[0] == sha(F.HDF5 + b"my own copy")


def test_offline_is_one_line_and_creates_nothing(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg = registry(F.Remote("deep/x.bin", "https://unused.example/x", sha(BODY)))
    with pytest.raises(DataError) as e:
        F.fetch("toyset", tmp_path / "data", mirror=f"http://127.0.0.1:{port}", registry=reg)
    msg = str(e.value)
    assert "\n" not in msg and "cannot download" in msg and "offline" in msg
    assert not (tmp_path / "data").exists()


def test_cli_offline_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from hpo.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(F.MIRROR_ENV, f"http://127.0.0.1:{port}")
    monkeypatch.setenv(F.DATA_ENV, str(tmp_path / "data"))
    assert main(["data", "fetch", "davis"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "cannot download" in err[0] and f"127.0.0.1:{port}/davis/Y" in err[0]
    assert not (tmp_path / "data").exists()


def test_cli_fetch_uses_hpo_data_and_the_mirror(server, tmp_path, monkeypatch, capsys):
    from hpo.cli import main

    # the registry's davis files, served with the bytes the pinned digests name: the shared copy, where present
    shared = ROOT.parent / "shared/data/davis"
    if not (shared / "Y").is_file():
        pytest.skip("the shared DeepDTA copy is not beside this checkout")
    for remote in F.DATASETS["davis"].files:
        server.files[remote.path] = (shared / remote.path.removeprefix("davis/")).read_bytes()
    monkeypatch.setenv(F.DATA_ENV, str(tmp_path / "data"))
    assert main(["data", "fetch", "davis", "--mirror", server.url]) == 0
    text = capsys.readouterr().out
    assert "davis: ready under" in text and "sha256 verified" in text
    assert (tmp_path / "data/davis/folds/test_fold_setting1.txt").is_file()
    assert main(["data", "list"]) == 0
    assert re.search(r"^davis\s+present", capsys.readouterr().out, re.M)


def test_cli_refuses_unknown_names_and_a_missing_action(capsys):
    from hpo.cli import main

    assert main(["data", "fetch", "metr-la"]) == 2
    assert "did you mean 'metr_la'?" in capsys.readouterr().err
    assert main(["data"]) == 2


@pytest.mark.parametrize("url", ["http://example.com/data", "file:///etc", "ftp://127.0.0.1/x", "https://"])
def test_only_https_or_loopback_http(url, tmp_path):
    reg = registry(F.Remote("x.bin", "https://unused.example/x"))
    with pytest.raises(UsageError, match="must be an https URL"):
        F.fetch("toyset", tmp_path, mirror=url, registry=reg)
    with pytest.raises(UsageError, match="must be an https URL"):
        F.fetch("toyset", tmp_path, registry=registry(F.Remote("x.bin", url)))
    assert leftovers(tmp_path) == []


def test_a_redirect_to_a_disallowed_url_is_refused(server, tmp_path):
    server.redirect["x.bin"] = "http://example.com/x.bin"
    reg = registry(F.Remote("x.bin", "https://unused.example/x"))
    with pytest.raises(UsageError, match="redirect: must be an https URL"):
        F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    server.redirect["y.bin"] = f"{server.url}/x2.bin"  # an allowed redirect is followed
    server.files["x2.bin"] = b"moved"
    F.fetch("toyset", tmp_path, mirror=server.url, registry=registry(F.Remote("y.bin", "https://unused.example/y")))
    assert (tmp_path / "y.bin").read_bytes() == b"moved"


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_a_zip_member_is_extracted_under_its_study_name(server, tmp_path):
    archive = zip_bytes({"jdft_3d-12-12-2022.json": b"[]", "other.txt": b"x"})
    server.files["jdft.json.zip"] = archive
    reg = registry(F.Remote("jdft.json.zip", "https://unused.example/z", sha(archive), unzip="jdft_3d-12-12-2022.json",
                            extract_to="dft_3d.json"))
    res = F.fetch("toyset", tmp_path, mirror=server.url, registry=reg)
    assert res.extracted == ["dft_3d.json"] and (tmp_path / "dft_3d.json").read_bytes() == b"[]"
    assert F.status(reg["toyset"], tmp_path) == "present"


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil_abs.txt", "a/../../evil.txt"])
def test_zip_slip_is_refused_and_nothing_is_extracted(server, tmp_path, evil):
    archive = zip_bytes({"fine.txt": b"ok", evil: b"pwned"})
    server.files["a.zip"] = archive
    reg = registry(F.Remote("a.zip", "https://unused.example/z", sha(archive), unzip="*", extract_to="out"))
    with pytest.raises(DataError, match="outside the target folder"):
        F.fetch("toyset", tmp_path / "root", mirror=server.url, registry=reg)
    assert not (tmp_path / "root/out").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/evil_abs.txt").exists()


def test_the_registry_is_https_pinned_where_it_can_be_and_relative():
    for ds in F.DATASETS.values():
        for f in ds.files:
            assert F.check_url(f.url) == f.url
            assert not f.path.startswith("/") and ".." not in f.path.split("/")
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)
        assert ds.pinned or "not pinned" in ds.note  # an unpinned checksum is said so
    assert {"dft_3d", "metr_la", "pems_bay", "davis", "kiba"} <= set(F.DATASETS)


def test_nothing_downloads_at_trial_time():
    """Only the `hpo data` command imports the downloader."""
    users = [p.relative_to(ROOT).as_posix() for p in (ROOT / "hpo").rglob("*.py")
             if p.name != "fetch.py" and re.search(r"hpo\.data\.fetch|from hpo\.data import .*\bfetch\b",
                                                   p.read_text())]
    assert users == ["hpo/cli/data.py"]


def _data_comment(study: Path) -> tuple[str | None, list[str]]:
    """The dataset a study's `# data:` comment names and the --set arguments it gives (continuation lines included)."""
    import shlex

    lines = study.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"# data: `hpo data fetch (\S+)`", line)
        if m:
            text = line
            for more in lines[i + 1:]:
                if not more.startswith("#   "):
                    break
                text += " " + more[1:].strip()
            sets = [a for a in re.findall(r"--set ('[^']*'|\S+)", text)]
            return m.group(1), [shlex.split(a)[0] for a in sets]
    return None, []


def test_every_study_of_a_fetchable_dataset_names_the_command_and_it_reads_what_the_command_writes():
    """A study's `# data:` comment names `hpo data fetch NAME`; with the --set it gives, the study's dataset paths
    are the files that command writes under the default data root (data/, from the repository root)."""
    from hpo.spec.study import apply_sets
    from hpo.spec.yaml_io import load_yaml

    named = {}
    for study in sorted((ROOT / "studies").glob("*.yaml")):
        name, sets = _data_comment(study)
        if name:
            named[study.stem] = name
            ds = F.get_dataset(name)
            assert study.stem in ds.studies, (study.name, name)
            dataset = apply_sets(load_yaml(study), sets, study.name)["task"]["dataset"]
            data = ROOT / "data"
            outputs = {(data / o).resolve() for o in ds.outputs()}
            folders = {p.parent for p in outputs}
            read = {k: (study.parent / v).resolve() for k, v in dataset.items()
                    if k in ("path", "adj", "dir") and isinstance(v, str)}
            assert "path" in read and read["path"] in outputs | folders, (study.name, read)
            assert all(p in outputs | folders for p in read.values() if data in p.parents), (study.name, read)
    assert named == {s: d.name for d in F.DATASETS.values() for s in d.studies}  # and every study the registry names has one
