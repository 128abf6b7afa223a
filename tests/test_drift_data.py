"""`flows.drift_data.load_table`: local files, fsspec URLs and W&B artifacts, only the needed columns.

W&B is faked at the `wandb.Api` seam: `FakeApi.artifact(ref)` returns an artifact whose
`download(root=...)` really writes files, like the SDK's.
"""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flows.drift_data import classify_ref, load_table, parse_wandb_ref

FRAME = pd.DataFrame({"age": [31, 45, 27], "plan": ["pro", "free", "pro"], "spend": [12.5, 0.0, 8.25]})


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MODELOPS_HOME", str(home))
    for name in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_module_imports_neither_prefect_nor_pandas() -> None:
    code = "import sys, flows.drift_data; print(sorted(m for m in ('prefect', 'pandas', 'wandb') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", "drift_data must stay cheap to import (no Prefect, pandas or wandb)"


# --- local files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ref.csv", "ref.csv.gz", "ref.parquet", "ref.pq"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".csv.gz"):
        FRAME.to_csv(path, index=False, compression="gzip")
        assert gzip.open(path).read(3) == b"age", "the fixture must really be gzipped"
    elif ".csv" in name:
        FRAME.to_csv(path, index=False)
    else:
        FRAME.to_parquet(path)

    pd.testing.assert_frame_equal(load_table(str(path)), FRAME)
    picked = load_table(str(path), ["spend", "age"])
    assert list(picked.columns) == ["spend", "age"], "columns come back in the requested order"
    pd.testing.assert_frame_equal(picked, FRAME[["spend", "age"]])


def test_file_url_and_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FRAME.to_parquet(tmp_path / "ref.parquet")
    pd.testing.assert_frame_equal(load_table((tmp_path / "ref.parquet").as_uri()), FRAME)
    monkeypatch.chdir(tmp_path)
    pd.testing.assert_frame_equal(load_table("./ref.parquet", ["plan"]), FRAME[["plan"]])


def test_parquet_reads_only_requested_column_chunks(tmp_path: Path) -> None:
    """Wreck the bytes of the `plan` column chunk: reading other columns must not touch them."""
    path = tmp_path / "ref.parquet"
    FRAME.to_parquet(path, compression=None, use_dictionary=False, index=False)
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    chunk = meta.row_group(0).column(names.index("plan"))
    data = bytearray(path.read_bytes())
    start = chunk.data_page_offset
    data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))

    pd.testing.assert_frame_equal(load_table(str(path), ["age", "spend"]), FRAME[["age", "spend"]])
    with pytest.raises(ValueError, match="could not read parquet table") as info:
        load_table(str(path))
    assert str(path) in str(info.value), "the error must name the broken file"


def test_csv_passes_a_selective_usecols(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ref.csv"
    FRAME.to_csv(path, index=False)
    calls: list[dict] = []
    real = pd.read_csv

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", spy)
    load_table(str(path), ["plan"])
    assert len(calls) == 1, "the CSV is read once"
    usecols = calls[0]["usecols"]
    assert [c for c in FRAME.columns if usecols(c)] == ["plan"], "pandas must be told to keep only 'plan'"


@pytest.mark.parametrize("name", ["ref.csv", "ref.csv.gz", "ref.parquet"])
def test_missing_column_names_column_and_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    FRAME.to_parquet(path) if name.endswith("parquet") else FRAME.to_csv(path, index=False)
    with pytest.raises(ValueError) as info:
        load_table(str(path), ["age", "tenure"])
    message = str(info.value)
    assert "'tenure'" in message and str(path) in message, message
    assert "'plan'" in message, "the error lists the columns the file does have"


@pytest.mark.parametrize("name", ["ref.csv", "ref.parquet"])
def test_missing_ok_skips_absent_columns(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    FRAME.to_parquet(path) if name.endswith("parquet") else FRAME.to_csv(path, index=False)
    frame = load_table(str(path), ["tenure", "plan", "age"], missing_ok=True)
    assert list(frame.columns) == ["plan", "age"], "a column missing on one side is dropped, not an error"


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ref.csv"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_table(str(missing))


def test_corrupt_files_name_path_and_cause(tmp_path: Path) -> None:
    bad_parquet = tmp_path / "bad.parquet"
    bad_parquet.write_bytes(b"not a parquet file at all")
    with pytest.raises(ValueError, match="could not read parquet table") as info:
        load_table(str(bad_parquet))
    assert str(bad_parquet) in str(info.value) and "Arrow" in str(info.value)

    bad_gz = tmp_path / "bad.csv.gz"
    bad_gz.write_bytes(b"plain text, not gzip")
    with pytest.raises(ValueError, match="could not read csv.gz table") as info:
        load_table(str(bad_gz))
    assert str(bad_gz) in str(info.value)

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="EmptyDataError"):
        load_table(str(empty))


def test_unknown_suffix_lists_formats(tmp_path: Path) -> None:
    path = tmp_path / "ref.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(ValueError) as info:
        load_table(str(path))
    for suffix in (".csv", ".csv.gz", ".parquet", ".pq"):
        assert suffix in str(info.value)


def test_columns_must_be_a_list() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        load_table("ref.csv", "age")  # type: ignore[arg-type]


# --- ref classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "kind"),
    [
        ("acme/churn/reference:v3", "wandb"),
        ("acme/wandb-registry-model/churn-classifier:production", "wandb"),
        ("wandb://acme/churn/reference:v3", "wandb"),
        ("wandb://reference:latest", "wandb"),
        ("reference:v3", "wandb"),
        ("data/ref.csv", "local"),
        ("/x/y.csv", "local"),
        ("./data.parquet", "local"),
        ("acme/churn/reference.csv:v3.csv", "local"),  # has a table suffix
        ("a/b/c/d:v1", "local"),  # four parts is a path
        ("file:///x/y.csv", "local"),
        ("gs://bucket/path/ref.parquet", "fsspec"),
        ("memory://x/ref.csv", "fsspec"),
    ],
)
def test_classify_ref(ref: str, kind: str) -> None:
    assert classify_ref(ref) == kind


def test_existing_path_that_looks_like_a_ref_stays_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "churn").mkdir(parents=True)
    (tmp_path / "acme" / "churn" / "reference:v3").write_text("age\n1\n")
    assert classify_ref("acme/churn/reference:v3") == "local"


def test_parse_wandb_ref_fills_entity_and_project() -> None:
    assert str(parse_wandb_ref("wandb://ref:v1", "acme", "churn")) == "acme/churn/ref:v1"
    assert str(parse_wandb_ref("churn/ref:v1", "acme")) == "acme/churn/ref:v1"
    with pytest.raises(ValueError, match="no entity and project"):
        parse_wandb_ref("ref:v1")


# --- fsspec -------------------------------------------------------------------------------------------


def test_fsspec_memory_filesystem() -> None:
    import fsspec

    FRAME.to_parquet("memory://drift-tests/ref.parquet")
    with fsspec.open("memory://drift-tests/ref.csv.gz", "wb", compression="gzip") as fh:
        fh.write(FRAME.to_csv(index=False).encode())
    pd.testing.assert_frame_equal(load_table("memory://drift-tests/ref.parquet", ["plan"]), FRAME[["plan"]])
    pd.testing.assert_frame_equal(load_table("memory://drift-tests/ref.csv.gz"), FRAME)
    with pytest.raises(FileNotFoundError, match="memory://drift-tests/absent.csv"):
        load_table("memory://drift-tests/absent.csv")


def test_gs_without_gcsfs_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gcsfs" else real(name, *a))
    with pytest.raises(ImportError) as info:
        load_table("gs://acme-data/churn/ref.parquet")
    assert 'pip install "modelops-flows[gcs]"' in str(info.value)
    assert "gcsfs" in str(info.value)


@pytest.mark.parametrize("refusal", ["401", "403"])
def test_gs_refused_names_the_credentials_to_check(monkeypatch: pytest.MonkeyPatch, refusal: str) -> None:
    """What gcsfs raises when Google says no (after its own token-refresh retries): a PermissionError
    that names the URL and the setting to check; any other error passes through untouched."""
    import fsspec
    from gcsfs.retry import HttpError

    error = (HttpError({"code": 401, "message": "Invalid Credentials"}) if refusal == "401"
             else OSError("Forbidden: acme-data/churn/ref.parquet\nno storage.objects.get access"))

    class Refusing:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def open(self) -> object:
            raise self.exc

    monkeypatch.setattr(fsspec, "open", lambda *a, **k: Refusing(error))
    with pytest.raises(PermissionError) as info:
        load_table("gs://acme-data/churn/ref.parquet")
    message = str(info.value)
    assert "gs://acme-data/churn/ref.parquet" in message and "GOOGLE_APPLICATION_CREDENTIALS" in message
    assert info.value.__cause__ is error

    monkeypatch.setattr(fsspec, "open", lambda *a, **k: Refusing(RuntimeError("socket closed")))
    with pytest.raises(RuntimeError, match="socket closed"):
        load_table("gs://acme-data/churn/ref.parquet")


# --- W&B artifacts -----------------------------------------------------------------------------------


class FakeArtifact:
    """Like `wandb.Artifact` after `api.artifact(ref)`: `download(root=)` writes its files, returns root."""

    def __init__(self, files: dict[str, bytes], version: str = "v3"):
        self.files = files
        self.version = version
        self.downloads: list[str] = []

    def download(self, root: str | None = None) -> str:
        assert root is not None, "load_table must choose the download directory"
        self.downloads.append(root)
        for name, data in self.files.items():
            target = Path(root) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return root


class FakeApi:
    def __init__(self, artifacts: dict[str, FakeArtifact]):
        self.artifacts = artifacts
        self.requested: list[str] = []

    def artifact(self, name: str, type: str | None = None) -> FakeArtifact:
        self.requested.append(name)
        if name not in self.artifacts:
            raise ValueError(f"artifact {name!r} not found")  # what the SDK does for an unknown name
        return self.artifacts[name]


def _csv() -> bytes:
    return FRAME.to_csv(index=False).encode()


def _parquet(tmp_path: Path) -> bytes:
    FRAME.to_parquet(tmp_path / "tmp.parquet")
    return (tmp_path / "tmp.parquet").read_bytes()


def test_wandb_single_table_file_is_chosen(_home: Path) -> None:
    artifact = FakeArtifact({"ref.csv": _csv(), "README.md": b"notes"})
    api = FakeApi({"acme/churn/reference:production": artifact})
    frame = load_table("acme/churn/reference:production", ["plan"], api=api)
    pd.testing.assert_frame_equal(frame, FRAME[["plan"]])
    assert api.requested == ["acme/churn/reference:production"]
    assert artifact.downloads == [str(_home / "artifacts" / "acme" / "churn" / "reference" / "v3")], (
        "downloads go to the cache under $MODELOPS_HOME, keyed by the resolved version (aliases move)"
    )


def test_wandb_file_chosen_by_name(tmp_path: Path) -> None:
    artifact = FakeArtifact({"train.parquet": _parquet(tmp_path), "sub/test.csv": _csv()})
    api = FakeApi({"acme/churn/reference:v3": artifact})
    pd.testing.assert_frame_equal(load_table("wandb://acme/churn/reference:v3", file="test.csv", api=api), FRAME)
    pd.testing.assert_frame_equal(load_table("acme/churn/reference:v3", file="train.parquet", api=api), FRAME)
    with pytest.raises(FileNotFoundError) as info:
        load_table("acme/churn/reference:v3", file="eval.csv", api=api)
    assert "sub/test.csv" in str(info.value) and "train.parquet" in str(info.value), "the error lists the files"


def test_wandb_ambiguous_or_no_table_lists_files(tmp_path: Path) -> None:
    api = FakeApi({
        "acme/churn/two:v1": FakeArtifact({"a.csv": _csv(), "b.parquet": _parquet(tmp_path)}, version="v1"),
        "acme/churn/none:v1": FakeArtifact({"model.pkl": b"\x80"}, version="v1"),
    })
    with pytest.raises(ValueError, match="several table files") as info:
        load_table("acme/churn/two:v1", api=api)
    assert "a.csv" in str(info.value) and "b.parquet" in str(info.value) and "file=" in str(info.value)
    with pytest.raises(ValueError, match="no table file.*model.pkl"):
        load_table("acme/churn/none:v1", api=api)


def test_wandb_missing_column_names_artifact_file() -> None:
    api = FakeApi({"acme/churn/reference:v3": FakeArtifact({"ref.csv": _csv()})})
    with pytest.raises(ValueError, match=r"'tenure' not found in 'acme/churn/reference:v3/ref.csv'"):
        load_table("acme/churn/reference:v3", ["tenure"], api=api)


def test_wandb_without_credentials_is_a_clear_error() -> None:
    from blocks.wandb import WandbConfigError, WandbCredentials

    with pytest.raises(WandbConfigError, match="W&B credentials are needed.*WANDB_API_KEY"):
        load_table("acme/churn/reference:v3")
    with pytest.raises(WandbConfigError, match="WandbCredentials block"):
        load_table("acme/churn/reference:v3", wandb=WandbCredentials(entity="acme"))


def test_wandb_block_supplies_api_entity_and_project(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `api=`, the block's `get_api()` is used and `name:alias` gets the block's entity/project."""
    from blocks.wandb import WandbCredentials

    api = FakeApi({"acme/churn/reference:v3": FakeArtifact({"ref.parquet": FRAME.to_parquet()})})
    monkeypatch.setattr(WandbCredentials, "get_api", lambda self: api)
    creds = WandbCredentials(api_key="k" * 40, entity="acme", project="churn")
    pd.testing.assert_frame_equal(load_table("reference:v3", wandb=creds), FRAME)
    assert api.requested == ["acme/churn/reference:v3"]

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_ENTITY", "acme")
    monkeypatch.setenv("WANDB_PROJECT", "churn")
    # No block: the WANDB_* variables supply the key, entity and project.
    pd.testing.assert_frame_equal(load_table("wandb://reference:v3"), FRAME)


def test_file_parameter_is_only_for_artifacts(tmp_path: Path) -> None:
    FRAME.to_csv(tmp_path / "ref.csv", index=False)
    with pytest.raises(ValueError, match="inside a W&B artifact"):
        load_table(str(tmp_path / "ref.csv"), file="ref.csv")

