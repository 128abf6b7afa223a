"""Load a table for the drift check from a local file, an fsspec URL (gs://, memory://) or a W&B artifact.

No Prefect import: pandas and pyarrow are imported on first use, the W&B block only on the W&B path.
Only the requested columns are read (`usecols` for CSV, `columns=` for Parquet).

    load_table("data/reference.parquet", ["age", "plan"])
    load_table("gs://acme-data/churn/current.csv.gz")                  # needs modelops-flows[gcs]
    load_table("acme/churn/reference:production", file="train.parquet")  # a W&B artifact
    load_table("wandb://reference:v3", wandb=creds)                      # entity/project from the block
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    import pandas as pd

    from blocks.wandb import WandbCredentials

__all__ = ["SUPPORTED_FORMATS", "RefKind", "WandbRef", "classify_ref", "load_table", "parse_wandb_ref"]

SUPPORTED_FORMATS = (".csv", ".csv.gz", ".parquet", ".pq")
WANDB_PREFIX = "wandb://"
RefKind = Literal["local", "fsspec", "wandb"]

_NAME = r"[\w.-]+"
_WANDB_FULL = re.compile(rf"^{_NAME}/{_NAME}/{_NAME}:{_NAME}$")
_WANDB_ANY = re.compile(rf"^(?:(?:{_NAME}/)?{_NAME}/)?{_NAME}:{_NAME}$")
_WANDB_SHORT = re.compile(rf"^{_NAME}:{_NAME}$")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# fsspec protocols whose implementation is an optional extra of this package.
_EXTRAS = {"gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}


def _table_format(name: str) -> Literal["csv", "csv.gz", "parquet"] | None:
    lower = name.lower()
    if lower.endswith(".csv.gz"):
        return "csv.gz"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    return None


def classify_ref(ref: str) -> RefKind:
    """Where `ref` points: "wandb" (an artifact), "fsspec" (a URL such as gs://) or "local" (a path).

    A ref is W&B when it starts with `wandb://`, or when it has no table-file suffix, looks like
    `entity/project/name:alias` (or `name:alias`) and is not an existing path.
    `data/ref.csv` and `./v1:v2` stay local.
    """
    if ref.startswith(WANDB_PREFIX):
        return "wandb"
    match = _URL.match(ref)
    if match:
        return "local" if match.group(1).lower() == "file" else "fsspec"
    if (
        _table_format(ref) is None
        and (_WANDB_FULL.match(ref) or _WANDB_SHORT.match(ref))
        and not os.path.exists(ref)
    ):
        return "wandb"
    return "local"


class WandbRef(tuple):
    """`(entity, project, name_alias)`; `str()` is the full `entity/project/name:alias`."""

    def __new__(cls, entity: str, project: str, name: str) -> WandbRef:
        return super().__new__(cls, (entity, project, name))

    def __str__(self) -> str:
        return "/".join(self)


def parse_wandb_ref(ref: str, entity: str | None = None, project: str | None = None) -> WandbRef:
    """Split `[wandb://][[entity/]project/]name:alias`, filling the missing parts from `entity`/`project`."""
    body = ref[len(WANDB_PREFIX):] if ref.startswith(WANDB_PREFIX) else ref
    if not _WANDB_ANY.match(body):
        raise ValueError(
            f"not a W&B artifact reference: {ref!r} (expected entity/project/name:alias, "
            "project/name:alias or name:alias, optionally prefixed with wandb://)"
        )
    parts = body.split("/")
    if len(parts) == 3:
        return WandbRef(*parts)
    if len(parts) == 2:
        parts = [entity or "", *parts]
    else:
        parts = [entity or "", project or "", *parts]
    if not parts[0] or not parts[1]:
        missing = " and ".join(n for n, v in (("entity", parts[0]), ("project", parts[1])) if not v)
        raise ValueError(
            f"W&B reference {ref!r} has no {missing}: write entity/project/name:alias, or set {missing} "
            "on the WandbCredentials block (WANDB_ENTITY / WANDB_PROJECT)"
        )
    return WandbRef(*parts)


LOCAL_ENTITY = "local"


def local_registry_file(ref: str) -> Path | None:
    """The file behind `local/wandb-registry-<name>/<collection>:<version or alias>`: the embedded
    stack's local registry stands in for W&B under the entity `local`. None for any other ref."""
    body = ref[len(WANDB_PREFIX):] if ref.startswith(WANDB_PREFIX) else ref
    parts = body.split("/")
    if len(parts) != 3 or parts[0] != LOCAL_ENTITY or not parts[1].startswith("wandb-registry-"):
        return None
    from blocks.registry import LocalRegistry, RegistryError

    collection, _, version = parts[2].rpartition(":")
    try:
        mv = LocalRegistry(entity=LOCAL_ENTITY, registry=parts[1][len("wandb-registry-"):]).get(collection, version)
    except RegistryError as exc:
        raise FileNotFoundError(f"{ref}: {exc}") from None
    return Path(mv.uri)


def load_table(
    ref: str,
    columns: Sequence[str] | None = None,
    *,
    wandb: WandbCredentials | None = None,
    file: str | None = None,
    missing_ok: bool = False,
    api: Any = None,
) -> pd.DataFrame:
    """Read the table at `ref`, keeping only `columns` (in that order) when given.

    `ref` is a local path (`file://` allowed), an fsspec URL (`gs://...`, needs the `gcs` extra) or a
    W&B artifact (see `classify_ref`); for an artifact, `file` names the table inside it (default: its
    only table file). A requested column that is absent raises ValueError unless `missing_ok`, which
    skips it. `api` replaces the `wandb.Api` built from `wandb` (or from WANDB_* variables).

    Raises FileNotFoundError (no such file), ValueError (unknown format, unreadable file, missing
    column, ambiguous artifact), ImportError (fsspec protocol not installed), and
    `blocks.wandb.WandbConfigError` when a W&B artifact is asked for without credentials.
    """
    if isinstance(columns, str):
        raise TypeError(f"columns is a list of column names, not a single string: use [{columns!r}]")
    wanted = None if columns is None else list(dict.fromkeys(columns))
    kind = classify_ref(ref)
    if kind == "wandb" and (local := local_registry_file(ref)) is not None:
        return _read(ref, _format_of(ref, local.name), lambda: open(local, "rb"), wanted, missing_ok)
    if kind == "wandb":
        path, display = _download_artifact(ref, wandb=wandb, file=file, api=api)
        return _read(display, _format_of(display, path.name), lambda: open(path, "rb"), wanted, missing_ok)
    if file is not None:
        raise ValueError(f"file= selects a file inside a W&B artifact; {ref!r} is not a W&B reference")
    if kind == "fsspec":
        return _read(ref, _format_of(ref, ref), _fsspec_opener(ref), wanted, missing_ok)
    path = _local_path(ref)
    fmt = _format_of(ref, path.name)
    if not path.exists():
        raise FileNotFoundError(f"table file not found: {str(path)!r} (from {ref!r})")
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file (from {ref!r})")
    return _read(str(path), fmt, lambda: open(path, "rb"), wanted, missing_ok)


def _format_of(display: str, name: str) -> str:
    fmt = _table_format(name)
    if fmt is None:
        raise ValueError(
            f"unsupported table format for {display!r}: supported suffixes are {', '.join(SUPPORTED_FORMATS)}"
        )
    return fmt


def _local_path(ref: str) -> Path:
    if _URL.match(ref):  # file://[host]/path
        parsed = urlparse(ref)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URL with a remote host is not supported: {ref!r}")
        return Path(unquote(parsed.path))
    return Path(ref).expanduser()


def _fsspec_opener(ref: str) -> Callable[[], IO[bytes]]:
    protocol = _URL.match(ref).group(1).lower()  # type: ignore[union-attr]
    extra = _EXTRAS.get(protocol)
    needed = ["fsspec"] + ([extra[0]] if extra else [])
    absent = [m for m in needed if importlib.util.find_spec(m) is None]
    if absent:
        hint = f'pip install "modelops-flows[{extra[1]}]"' if extra else f"pip install {' '.join(absent)}"
        raise ImportError(
            f"reading {protocol}:// tables ({ref!r}) needs {' and '.join(absent)}, which is not installed: {hint}"
        )
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as exc:
        raise ImportError(f"no fsspec filesystem available for {protocol}:// ({ref!r}): {exc}") from exc

    def opener() -> IO[bytes]:
        try:
            return fsspec.open(ref, "rb").open()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"table file not found: {ref!r}") from exc
        except Exception as exc:
            if not _refused(exc):
                raise
            hint = _CREDENTIAL_HINTS.get(protocol, "check the credentials this worker uses for it")
            raise PermissionError(f"reading {ref!r} was refused ({exc}): {hint}") from exc

    return opener


_CREDENTIAL_HINTS = {
    "gs": "check the worker's Google credentials (GOOGLE_APPLICATION_CREDENTIALS, or the service account "
          "attached to it) and that they may read the object (roles/storage.objectViewer)",
}
_CREDENTIAL_HINTS["gcs"] = _CREDENTIAL_HINTS["gs"]


def _refused(exc: BaseException) -> bool:
    """An fsspec backend's "not allowed": gcsfs raises HttpError(code 401) once it has given up
    refreshing the token, and OSError("Forbidden: ...") on 403."""
    if isinstance(exc, PermissionError):
        return True
    if getattr(exc, "code", None) in (401, 403):
        return True
    return isinstance(exc, OSError) and str(exc).startswith("Forbidden")


def _read(
    display: str,
    fmt: str,
    opener: Callable[[], IO[bytes]],
    wanted: list[str] | None,
    missing_ok: bool,
) -> pd.DataFrame:
    """Read the table through `opener`, only the `wanted` columns; errors name `display`."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    present: list[str] | None = None
    header: list[str] = []  # CSV: the names pandas offered to `usecols`, i.e. the file's header
    with opener() as fh:
        try:
            if fmt == "parquet":
                parquet = pq.ParquetFile(fh)
                names = parquet.schema_arrow.names
                present = _check_columns(wanted, names, display, missing_ok)
                table = parquet.read(columns=present, use_pandas_metadata=present is None)
                frame = table.to_pandas()
            else:
                compression = "gzip" if fmt == "csv.gz" else None
                if wanted is None:
                    frame = pd.read_csv(fh, compression=compression)
                    if any("." in str(c) for c in frame.columns):  # pandas renames a repeated name "a" to "a.1"
                        with opener() as again:
                            raw = pd.read_csv(again, compression=compression, header=None, nrows=1, dtype=str)
                        names = [str(x) for x in raw.iloc[0].tolist()] if len(raw) else []
                        dupes = sorted({n for n in names if names.count(n) > 1})
                        if dupes:
                            raise _ColumnError(f"{display!r} has duplicated column name(s) "
                                               f"{', '.join(map(repr, dupes))} in its header: rename them so each "
                                               f"column has one name")
                else:
                    wanted_set = set(wanted)

                    def keep(name: str) -> bool:
                        header.append(name)
                        return name in wanted_set

                    frame = pd.read_csv(fh, compression=compression, usecols=keep)
        except FileNotFoundError:
            raise
        except (ValueError, OSError, EOFError, UnicodeDecodeError, pa.ArrowException, pd.errors.ParserError) as exc:
            if isinstance(exc, _ColumnError):
                raise
            cause = str(exc).strip() or type(exc).__name__
            raise ValueError(f"could not read {fmt} table {display!r}: {type(exc).__name__}: {cause}") from exc
    if wanted is None:
        return frame
    if present is None:  # CSV: the header is known only after reading
        present = _check_columns(wanted, list(dict.fromkeys(header)), display, missing_ok)
    return frame[present]


class _ColumnError(ValueError):
    pass


def _check_columns(wanted: list[str] | None, names: Sequence[str], display: str, missing_ok: bool) -> list[str] | None:
    if wanted is None:
        return None
    have = set(names)
    missing = [c for c in wanted if c not in have]
    if missing and not missing_ok:
        shown = ", ".join(map(repr, names[:20])) + (", ..." if len(names) > 20 else "")
        raise _ColumnError(
            f"column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} not found in {display!r} "
            f"(it has: {shown})"
        )
    return [c for c in wanted if c in have]


def _download_artifact(ref: str, *, wandb: WandbCredentials | None, file: str | None, api: Any) -> tuple[Path, str]:
    """Download the artifact into `$MODELOPS_HOME/artifacts/...` and pick its table file."""
    if api is None:
        from blocks.wandb import CREDENTIALS_SETTING, WandbConfigError, WandbCredentials

        creds = wandb if wandb is not None else WandbCredentials.from_env()
        if creds is None or creds.api_key is None:
            raise WandbConfigError(f"W&B credentials are needed to read the artifact {ref!r}: set {CREDENTIALS_SETTING}")
        full = parse_wandb_ref(ref, creds.entity, creds.project)
        api = creds.get_api()
    else:
        full = parse_wandb_ref(ref, getattr(wandb, "entity", None), getattr(wandb, "project", None))
    entity, project, name_alias = full
    name, _, alias = name_alias.partition(":")
    try:
        artifact = api.artifact(str(full))
    except Exception as exc:  # noqa: BLE001 - the SDK's errors, translated: which server, what to check
        raise _wandb_failure(exc, wandb, f"reading the artifact {str(full)!r}",
                             f"check the entity, project, name and alias of {ref!r}") from None
    # A version ("v3") names fixed content; an alias ("production") moves, so prefer the resolved version.
    version = str(getattr(artifact, "version", None) or alias)
    home = Path(os.environ.get("MODELOPS_HOME") or ".modelops").resolve()
    try:
        root = Path(artifact.download(root=str(home / "artifacts" / entity / project / name / version)))
    except Exception as exc:  # noqa: BLE001 - as above
        raise _wandb_failure(exc, wandb, f"downloading the artifact {str(full)!r}", "") from None
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    if file is not None:
        chosen = [f for f in files if f == file.strip("/")] or [f for f in files if f.rsplit("/", 1)[-1] == file]
        if not chosen:
            raise FileNotFoundError(f"no file {file!r} in W&B artifact {str(full)!r}; it has: {_listing(files)}")
        if len(chosen) > 1:
            raise ValueError(
                f"several files named {file!r} in W&B artifact {str(full)!r}: {_listing(chosen)}; "
                "pass the path inside the artifact"
            )
    else:
        chosen = [f for f in files if _table_format(f) is not None]
        if len(chosen) != 1:
            problem = "no table file" if not chosen else "several table files"
            kind = getattr(artifact, "type", None)
            raise ValueError(
                f"{problem} in W&B artifact {str(full)!r}{f' (type {kind})' if kind else ''} "
                f"(looked for {', '.join(SUPPORTED_FORMATS)}): it has {_listing(files)}; "
                + ("pass file= to choose one" if chosen else "name a dataset artifact that holds a CSV or Parquet table")
            )
    return root / chosen[0], f"{full}/{chosen[0]}"


def _wandb_failure(exc: BaseException, wandb: WandbCredentials | None, doing: str, hint: str) -> Exception:
    """The SDK's error as ours: a missing artifact is a FileNotFoundError (bad input), a refused key a
    `WandbConfigError`, an outage `WandbUnavailable` (worth a retry)."""
    from blocks.wandb import WandbNotFound, wandb_failure

    failure = wandb.failure(exc, doing) if hasattr(wandb, "failure") else wandb_failure(exc, doing)
    if isinstance(failure, WandbNotFound):
        return FileNotFoundError(f"{failure}{'; ' + hint if hint else ''}")
    return failure


def _listing(files: Sequence[str]) -> str:
    if not files:
        return "no files"
    return ", ".join(files[:30]) + (f", ... ({len(files)} files)" if len(files) > 30 else "")
