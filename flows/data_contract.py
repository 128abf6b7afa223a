"""The data contract: what a table must be before anything trains on it, scores with it or compares it.
Pure (pandas only, no Prefect), used by the training entry point (`training.tabular`), the retrain
flow before training and for the gate's scoring, and drift-check for both tables.

    table, report = check_table(df, target="churned", schema=production_schema, against="production churn-model:v3")
    report.ok, report.errors, report.warnings, report.rows()   # rows: one per column, for a table artifact
    report.raise_for_errors()                                  # DataContractError naming column, cells, fix

What it holds a table to:

* rows > 0 ("the table has no rows"), column names unique and non-empty;
* the target (when given) present, with >= 2 classes and >= 2 rows in each (the stratified split needs
  them); rows without a label are dropped and counted;
* each feature's type inferred once: ``numeric`` (numbers, also numbers stored as text), ``boolean``,
  ``categorical`` (text with few distinct values) or ``text`` (ids, free text: more than
  ``max_categories`` distinct values, or every value distinct);
  - a numeric column with cells that are not numbers is refused, naming the column, how many cells
    and a few of them with their row numbers (1-based data rows, as a spreadsheet shows them); a text
    column is numeric when >= 80% of its cells are numbers, or >= 20% taking more than 20 values
    (numeric-looking codes with few values stay categorical);
    ``coerce_numeric`` turns them into missing values instead, and the report counts them;
  - infinite numbers are refused the same way (``coerce_numeric`` makes them missing);
  - ``text`` columns are refused (one-hot encoding an id makes thousands of columns and a model that
    memorises rows); ``drop_high_cardinality`` drops them instead, reported;
  - all-missing columns are dropped and constant columns kept, both reported;
* the table against a **schema** (the reference table's, or the production model's, `schema_of`):
  a column the schema has and the table lacks is refused ("which side has what"), a column whose type
  changed is refused, new columns are reported.

Hand-written on pandas rather than pandera or pyarrow schemas: the contract's work is *inferring* a
type from messy cells and explaining the cells that break it (row numbers, examples, counts), which
neither does (pandera validates a schema one already has and would add a dependency tree; pyarrow
would refuse a mixed column without saying which rows), while the checks against a known schema are a
dozen lines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ColumnReport", "ContractOptions", "ContractReport", "DataContractError", "check_table", "schema_of"]

KINDS = ("numeric", "boolean", "categorical", "text")
#: a text column whose non-missing cells are at least this share of numbers is a numeric column with bad cells
NUMERIC_SHARE = 0.8
#: ... and so is one with at least this share of numbers taking more than MIXED_MIN_DISTINCT values (half
#: the ages replaced by 'x' is a broken numeric column, not a category with 58 levels); numeric-looking
#: codes with few values ('1', '2', 'other') stay categorical
MIXED_SHARE, MIXED_MIN_DISTINCT = 0.2, 20
EXAMPLES = 3
_MISSING_TEXT = {"", "na", "n/a", "nan", "null", "none"}


class DataContractError(ValueError):
    """The table breaks the data contract; the message names the column, the cells and the fix."""

    def __init__(self, message: str, report: ContractReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ContractOptions:
    coerce_numeric: bool = False  # non-numeric / infinite cells of a numeric column -> missing (counted)
    drop_high_cardinality: bool = False  # ids and free text dropped (reported) instead of refused
    max_categories: int = 100  # more distinct values than this make a text column "text", not categorical
    min_rows_per_class: int = 2

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> ContractOptions:
        data = dict(data or {})
        out: dict[str, Any] = {}
        for key in ("coerce_numeric", "drop_high_cardinality"):
            if key in data:
                value = data[key]
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false, got {value!r}")
                out[key] = value
        for key in ("max_categories", "min_rows_per_class"):
            if key in data:
                value = data[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{key} must be a positive integer, got {value!r}")
                out[key] = value
        return cls(**out)


OPTION_KEYS = ("coerce_numeric", "drop_high_cardinality", "max_categories", "min_rows_per_class")


@dataclass
class ColumnReport:
    name: str
    kind: str  # numeric | boolean | categorical | text | empty | target
    missing_pct: float
    distinct: int
    problems: list[str] = field(default_factory=list)
    action: str = "kept"  # kept | coerced | dropped | refused

    def row(self) -> dict[str, Any]:
        return {"column": self.name, "type": self.kind, "missing %": round(self.missing_pct, 2),
                "distinct": self.distinct, "action": self.action, "problems": "; ".join(self.problems)}


@dataclass
class ContractReport:
    rows: int
    target: str | None
    columns: list[ColumnReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def schema(self) -> dict[str, str]:
        """{feature: kind} of what was kept (the target excluded)."""
        return {c.name: c.kind for c in self.columns if c.action in ("kept", "coerced") and c.kind != "target"}

    def rows_table(self) -> list[dict[str, Any]]:
        return [c.row() for c in self.columns]

    def summary(self) -> str:
        if self.errors:
            more = f" (and {len(self.errors) - 1} more problem(s))" if len(self.errors) > 1 else ""
            return self.errors[0] + more
        return f"{self.rows:,} rows, {len(self.schema)} feature(s) pass the data contract" + (
            f"; {len(self.warnings)} warning(s): " + "; ".join(self.warnings) if self.warnings else "")

    def raise_for_errors(self) -> None:
        if self.errors:
            raise DataContractError(self.summary(), self)

    def markdown(self, title: str) -> str:
        head = f"# {title}\n\n**{'Refused' if self.errors else 'Passed'}**: {self.summary()}\n\n"
        lines = ["| column | type | missing % | distinct | action | problems |", "|---|---|---|---|---|---|"]
        for c in self.columns:
            lines.append(f"| {c.name} | {c.kind} | {c.missing_pct:.2f} | {c.distinct} | {c.action} | "
                         f"{'; '.join(c.problems).replace('|', '/')} |")
        return head + "\n".join(lines) + "\n"


def _examples(series: pd.Series, mask: Any) -> str:
    idx = list(series.index[mask][:EXAMPLES])
    return ", ".join(f"row {int(i) + 1}: {str(series[i])[:30]!r}" for i in idx)


def _is_missing_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in _MISSING_TEXT


def check_table(df: pd.DataFrame, *, target: str | None = None, schema: Mapping[str, str] | None = None,
                against: str = "the reference", options: ContractOptions | None = None,
                what: str = "the table") -> tuple[pd.DataFrame, ContractReport]:
    """The table as the contract keeps it (coerced cells missing, dropped columns gone, rows without a
    label dropped) and the report. Never raises for bad data: call `report.raise_for_errors()`."""
    import numpy as np
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    options = options or ContractOptions()
    report = ContractReport(rows=int(len(df)), target=target)
    names = [str(c) for c in df.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        report.errors.append(f"{what} has duplicated column name(s) {', '.join(map(repr, dupes))}: rename them so "
                             f"each column has one name")
        return df, report
    if any(n.strip() == "" for n in names):
        report.errors.append(f"{what} has a column without a name: give every column a header")
        return df, report
    df = df.copy()
    df.columns = names
    df = df.reset_index(drop=True)
    if len(df) == 0:
        report.errors.append(f"{what} has no rows (only a header with {len(names)} column(s)): nothing to train on "
                             f"or compare")
        return df, report
    if target is not None:
        if target not in df.columns:
            glued = next((sep for sep in (";", "\t", "|") if len(names) == 1 and sep in str(names[0])), None)
            if glued:  # one column whose name holds the whole header: a CSV with another delimiter
                report.errors.append(
                    f"{what} reads as one column {str(names[0])[:60]!r}: it looks separated by {glued!r}, not "
                    f"commas; save it comma-separated (or as Parquet)")
            else:
                report.errors.append(f"target column {target!r} is not in {what} (columns: {', '.join(names[:20])}): "
                                     f"pass --target with the label column")
            return df, report
        labels = df[target].map(lambda v: np.nan if _is_missing_text(v) else v)
        unlabelled = int(labels.isna().sum())
        if unlabelled:
            report.warnings.append(f"{unlabelled:,} row(s) have no {target!r} label and are left out")
            df = df[labels.notna()].reset_index(drop=True)
            labels = labels[labels.notna()].reset_index(drop=True)
        numeric = pd.to_numeric(labels, errors="coerce")
        if len(labels) and numeric.notna().all() and (numeric == numeric.round()).all():
            labels = numeric.astype("int64")  # class labels that are whole numbers (0/1, also as text or 1.0)
        else:
            if len(labels) and numeric.notna().any():
                report.warnings.append(f"target column {target!r} mixes numbers and text: its labels are read as text")
            labels = labels.map(lambda v: str(v).strip())
        df[target] = labels.to_numpy()
        counts = labels.astype(str).value_counts()
        report.columns.append(ColumnReport(target, "target", unlabelled / max(1, report.rows) * 100, int(len(counts))))
        if len(counts) < 2:
            report.errors.append(f"target column {target!r} needs at least two classes, found "
                                 f"{list(counts.index[:5]) or 'no labelled rows'}" + (
                                     f" ({unlabelled:,} row(s) without a label)" if unlabelled else ""))
        elif int(counts.min()) < options.min_rows_per_class:
            rare = [f"{k!r}: {v}" for k, v in counts.items() if v < options.min_rows_per_class]
            report.errors.append(f"target column {target!r}: class(es) {', '.join(rare[:5])} have fewer than "
                                 f"{options.min_rows_per_class} rows, too few to hold out for evaluation: add rows "
                                 f"or merge the class")
        if len(counts) > max(50, options.max_categories) and is_numeric_dtype(df[target]):
            report.errors.append(f"target column {target!r} has {len(counts):,} distinct values: a classifier needs "
                                 f"class labels, not a continuous number")
    out = df
    drop: list[str] = []
    for name in names:
        if name == target:
            continue
        col = out[name]
        n = len(col)
        missing_mask = col.isna() | col.map(_is_missing_text)
        missing = int(missing_mask.sum())
        present = col[~missing_mask]
        entry = ColumnReport(name, "numeric", missing / n * 100 if n else 0.0, 0)
        report.columns.append(entry)
        if len(present) == 0:
            entry.kind, entry.action = "empty", "dropped"
            entry.problems.append("every cell is missing")
            report.warnings.append(f"column {name!r} is empty (every cell missing): dropped")
            drop.append(name)
            continue
        if is_bool_dtype(col) or set(present.map(type)) <= {bool, np.bool_}:
            entry.kind, entry.distinct = "boolean", int(present.nunique())
            out[name] = col.where(~missing_mask, np.nan).map(lambda v: v if isinstance(v, float) else bool(v))
        elif is_numeric_dtype(col):
            values = pd.to_numeric(col, errors="coerce").astype(float)
            _numeric(out, name, values, values.isna() & ~missing_mask, entry, report, options, col)
        else:
            parsed = pd.to_numeric(present.map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
            bad = parsed.isna()
            share = 1 - bad.mean() if len(present) else 0.0
            numeric_like = share >= NUMERIC_SHARE or (
                share >= MIXED_SHARE and parsed.dropna().nunique() > MIXED_MIN_DISTINCT)
            if numeric_like and not present.map(lambda v: isinstance(v, bool)).any():
                values = pd.Series(np.nan, index=col.index, dtype=float)
                values[present.index] = parsed.astype(float)
                bad_mask = pd.Series(False, index=col.index)
                bad_mask[present.index[bad.to_numpy()]] = True
                _numeric(out, name, values, bad_mask, entry, report, options, col)
            else:
                text = present.map(str)
                entry.distinct = int(text.nunique())
                everyone = entry.distinct == len(text) and len(text) >= 20
                if entry.distinct > options.max_categories or everyone:
                    entry.kind = "text"
                    why = (f"{entry.distinct:,} distinct values" + (" (every value distinct: an id?)" if everyone
                                                                     else f" > max_categories {options.max_categories}"))
                    entry.problems.append(why)
                    if options.drop_high_cardinality:
                        entry.action = "dropped"
                        drop.append(name)
                        report.warnings.append(f"column {name!r} is an id or free text ({why}): dropped")
                    else:
                        entry.action = "refused"
                        report.errors.append(
                            f"column {name!r} is an id or free text ({why}, e.g. {_examples(col, ~missing_mask)}): "
                            f"one-hot encoding it would make {entry.distinct:,} columns; drop it from the data, or "
                            f"pass drop_high_cardinality to drop it")
                else:
                    entry.kind = "categorical"
                    out[name] = col.where(~missing_mask, np.nan).map(lambda v: v if isinstance(v, float) and
                                                                     math.isnan(v) else str(v))
        if entry.action in ("kept", "coerced") and entry.distinct == 1 and missing == 0:
            entry.problems.append("constant: one value in every row")
            report.warnings.append(f"column {name!r} is constant (one value in every row): it carries no information")
    if drop:
        out = out.drop(columns=drop)
    features = [c for c in report.columns if c.kind != "target" and c.action in ("kept", "coerced")]
    if not features and not report.errors:
        report.errors.append(f"{what} has no usable feature column besides the target")
    if schema is not None:
        _against_schema(report, schema, against, what)
    return out, report


def _numeric(out: pd.DataFrame, name: str, values: pd.Series, bad_mask: pd.Series, entry: ColumnReport,
             report: ContractReport, options: ContractOptions, original: pd.Series) -> None:
    import numpy as np

    infinite = np.isinf(values.to_numpy(dtype=float, na_value=np.nan))
    n_bad, n_inf = int(bad_mask.sum()), int(infinite.sum())
    entry.kind = "numeric"
    finite = values[~infinite & values.notna().to_numpy()]
    entry.distinct = int(finite.nunique())
    problems = []
    if n_bad:
        problems.append(f"{n_bad:,} cell(s) are not numbers ({_examples(original, bad_mask.to_numpy())})")
    if n_inf:
        problems.append(f"{n_inf:,} cell(s) are infinite ({_examples(original, infinite)})")
    entry.problems.extend(problems)
    if problems and options.coerce_numeric:
        entry.action = "coerced"
        report.warnings.append(f"numeric column {name!r}: {' and '.join(problems)}, read as missing (coerce_numeric)")
    elif problems:
        entry.action = "refused"
        report.errors.append(f"numeric column {name!r}: {' and '.join(problems)}; fix those cells, or pass "
                             f"coerce_numeric to read them as missing")
    out[name] = values.where(~infinite, np.nan)
    if entry.missing_pct == 0 and (n_bad or n_inf) and options.coerce_numeric:
        entry.missing_pct = (n_bad + n_inf) / len(values) * 100


def _against_schema(report: ContractReport, schema: Mapping[str, str], against: str, what: str) -> None:
    have = {c.name: c.kind for c in report.columns if c.kind != "target"}
    kept = report.schema
    missing = [c for c in schema if c not in have or (c in have and c not in kept)]
    if missing:
        report.errors.append(
            f"{what} lacks column(s) {', '.join(f'{c!r} ({schema[c]})' for c in missing)} that {against} has: "
            f"add them back, or train and compare without them on purpose (a new model without those features)")
    changed = [f"{c!r} is {schema[c]} in {against} but {kept[c]} in {what}" for c in schema
               if c in kept and schema[c] != kept[c] and {schema[c], kept[c]} != {"numeric", "boolean"}]
    if changed:
        report.errors.append("column type changed: " + "; ".join(changed) + ": fix the column's cells")
    extra = [c for c in kept if c not in schema]
    if extra:
        report.warnings.append(f"column(s) {', '.join(map(repr, extra))} are new: {against} does not have them")


def schema_of(bundle: Mapping[str, Any]) -> dict[str, str]:
    """{feature: kind} a model bundle was trained on: the recorded schema, or read off its pipeline
    (numeric vs categorical columns of the preprocessor) for models saved before schemas were recorded."""
    if isinstance(bundle.get("schema"), Mapping):
        return dict(bundle["schema"])
    out = {f: "numeric" for f in bundle.get("features", [])}
    try:
        prep = bundle["pipeline"][0]
        for name, _, cols in prep.transformers_:
            if name == "cat":
                for c in cols:
                    out[str(c)] = "categorical"
    except (KeyError, IndexError, AttributeError, TypeError):
        pass
    return out
