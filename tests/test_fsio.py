"""contract.fsio, the one door to bytes: strict decompression, listing, fetch/upload and its own errors,
on real files (and a real S3 protocol server, moto on loopback)."""
from __future__ import annotations

import gzip
import pickle

import pytest
import zstandard

from contract import fsio
from tests.conftest import s3_options

LINES = [f'{{"i": {i}, "text": "line {i} of the file"}}'.encode() for i in range(20_000)]
BODY = b"".join(x + b"\n" for x in LINES)


def _write(path, codec: str, body: bytes = BODY) -> bytes:
    # zstd frames with a content checksum (the zstd CLI's default): without one, flipped literal bytes can
    # decode to other bytes without any error, which no reader can notice
    blob = {"gzip": lambda b: gzip.compress(b, mtime=0),
            "zstd": zstandard.ZstdCompressor(level=3, write_checksum=True).compress,
            None: bytes}[codec](body)
    path.write_bytes(blob)
    return blob


@pytest.mark.parametrize("name,codec", [("a.jsonl", None), ("a.jsonl.gz", "gzip"), ("a.jsonl.zst", "zstd"),
                                        ("a.jsonl.zstd", "zstd")])
def test_read_lines_infers_the_codec_and_counts_compressed_bytes(tmp_path, name, codec):
    path = tmp_path / name
    blob = _write(path, codec)
    assert fsio.compression_of(name) == codec
    assert list(fsio.read_lines(str(path))) == LINES

    class Meter:
        bytes = 0

    m = Meter()
    assert list(fsio.read_lines(str(path), codec, meter=m)) == LINES and m.bytes == len(blob)


def test_lines_keep_blank_and_unterminated_lines_and_zstd_frames_concatenate(tmp_path):
    path = tmp_path / "x.zst"
    c = zstandard.ZstdCompressor()
    path.write_bytes(c.compress(b"a\n\nb") + c.compress(b"c\nd"))   # two frames; the line spans them
    assert list(fsio.read_lines(str(path))) == [b"a", b"", b"bc", b"d"]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_stream_raises_naming_file_and_line(tmp_path, codec, damage):
    path = tmp_path / ("e.jsonl.gz" if codec == "gzip" else "e.jsonl.zst")
    blob = _write(path, codec)
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    else:  # a flipped run inside the compressed data (after gzip's header)
        blob = blob[:100] + bytes(b ^ 0x5A for b in blob[100:400]) + blob[400:]
    path.write_bytes(blob)
    got = []
    with pytest.raises(fsio.CorruptStreamError) as ei:
        for line in fsio.read_lines(str(path)):
            got.append(line)
    e = ei.value
    assert e.path == str(path) and str(e).startswith(f"{path}: truncated or corrupt {codec} stream at line {e.line} (")
    assert e.line == len(got) + 1 and got == LINES[: len(got)] and len(got) < len(LINES)
    assert isinstance(e, fsio.FsioError) and isinstance(e, OSError)
    again = pickle.loads(pickle.dumps(e))   # crosses Beam's worker boundary intact
    assert (type(again), str(again), again.line, again.reason) == (type(e), str(e), e.line, e.reason)


def test_storage_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    for call in (lambda: fsio.read_bytes(missing), lambda: list(fsio.read_lines(missing)),
                 lambda: fsio.fetch(missing, str(tmp_path / "copy")), lambda: fsio.size(missing)):
        with pytest.raises(fsio.NotFoundError) as ei:
            call()
        assert isinstance(ei.value, FileNotFoundError) and str(ei.value).startswith(f"{missing}: cannot ")
    with pytest.raises(fsio.StorageError, match=r"cannot open: IsADirectoryError"):
        fsio.read_bytes(str(tmp_path))


def test_listing_fetch_and_upload_local(tmp_path):
    root = tmp_path / "root"
    for rel in ("a/index.json", "a/x.bin", "b/other.txt", "top.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    assert fsio.list_files(str(root)) == ["a/index.json", "a/x.bin", "b/other.txt", "top.json"]
    assert fsio.files_in(str(root), ".json") == ["top.json"] and fsio.files_in(str(tmp_path / "none")) == []
    assert fsio.dirs_with(str(root), "index.json") == ["a"]
    assert sorted(fsio.glob(str(root / "a" / "*"))) == [(str(root / "a" / "index.json"), 12),
                                                       (str(root / "a" / "x.bin"), 7)]
    assert fsio.glob(str(root / "z*")) == [] and fsio.size(str(root / "top.json")) == 8
    assert fsio.local_copy(str(root / "top.json"), str(tmp_path)) == str(root / "top.json")
    dst = tmp_path / "dst"
    fsio.upload_tree(str(root), str(dst), last=["top.json"])
    assert fsio.list_files(str(dst)) == fsio.list_files(str(root))
    assert fsio.fetch(str(dst / "a" / "x.bin"), str(tmp_path / "f" / "g" / "x")) == str(tmp_path / "f" / "g" / "x")
    assert (tmp_path / "f" / "g" / "x").read_bytes() == b"a/x.bin"


def test_remote_round_trip_on_s3(tmp_path, s3_server):
    boto3 = pytest.importorskip("boto3")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="fsio-test")
    fsio.set_options(s3_options(s3_server))
    local = tmp_path / "e.jsonl.zst"
    blob = _write(local, "zstd")
    fsio.upload(str(local), "s3://fsio-test/evals/e.jsonl.zst")
    fsio.write_bytes("s3://fsio-test/evals/sub/index.json", b"{}")
    assert fsio.exists("s3://fsio-test/evals/e.jsonl.zst") and not fsio.exists("s3://fsio-test/evals/none")
    assert fsio.glob("s3://fsio-test/evals/*.zst") == [("s3://fsio-test/evals/e.jsonl.zst", len(blob))]
    assert fsio.list_files("s3://fsio-test/evals") == ["e.jsonl.zst", "sub/index.json"]
    assert fsio.files_in("s3://fsio-test/evals", ".zst") == ["e.jsonl.zst"] and fsio.dirs_with("s3://fsio-test/evals", "index.json") == ["sub"]
    assert list(fsio.read_lines("s3://fsio-test/evals/e.jsonl.zst")) == LINES
    copy = fsio.local_copy("s3://fsio-test/evals/e.jsonl.zst", str(tmp_path / "dl"))
    assert copy != str(local) and open(copy, "rb").read() == blob
    fsio.write_bytes("s3://fsio-test/evals/cut.jsonl.zst", blob[: len(blob) // 2])
    with pytest.raises(fsio.CorruptStreamError, match=r"^s3://fsio-test/evals/cut.jsonl.zst: truncated or corrupt zstd"):
        list(fsio.read_lines("s3://fsio-test/evals/cut.jsonl.zst"))
    with pytest.raises(fsio.StorageError, match="s3://fsio-test/evals/missing"):
        fsio.read_bytes("s3://fsio-test/evals/missing")
    # Beam builds an S3 client per call (~150 ms each); through fsio one client per process and arguments serves all
    from apache_beam.io.aws.clients.s3 import boto3_client
    from apache_beam.options.pipeline_options import PipelineOptions

    same = PipelineOptions(s3_options(s3_server))
    assert boto3_client.Client(same).client is boto3_client.Client(same).client
    assert boto3_client.Client(PipelineOptions(s3_options("http://127.0.0.1:1"))).client is not boto3_client.Client(same).client
