"""Which notes a search may return: patients, categories, dates and any stored column.

`Filters` compiles, against one index's metadata store, to an Arrow compute expression; the
store turns it into the row mask that faiss applies as an id selector. Everything is checked
against the store first: an unknown column, a category or patient the index does not hold,
or a value of the wrong type is an error naming the valid choices, never an empty result.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import pyarrow as pa
import pyarrow.compute as pc

from .index.store import MetadataStore

_CONDITION = re.compile(r"^\s*([^=!<>]+?)\s*(>=|<=|!=|==|=|>|<)\s*(.*?)\s*$", re.DOTALL)
_OPS = {"=": "isin", "==": "isin", "!=": "notin", ">=": pc.greater_equal, "<=": pc.less_equal,
        ">": pc.greater, "<": pc.less}
SHOWN_VALUES = 20  # valid values listed in an error


@dataclass(frozen=True)
class Filters:
    """Restrict hits. Every given part must hold (AND).

    subjects / exclude_subjects  patients (the schema's subject role: SUBJECT_ID, subject_id,
                                 person_id, …) to keep / leave out
    categories                   categories (the category role: CATEGORY, note_type,
                                 note_source_value, …), matched case-insensitively
    since / until                inclusive date bounds (date or "YYYY-MM-DD") on `date_col`,
                                 by default the time role (CHARTDATE, charttime, note_date)
    where                        conditions on any stored column, as text ("HADM_ID=134690",
                                 "CATEGORY=ECG,Echo", "CHARTDATE>=2150-01-01",
                                 "DESCRIPTION!=Report") or Arrow expressions
                                 (`pyarrow.compute.field("HADM_ID") == 134690`)
    """

    subjects: Sequence = ()
    categories: Sequence[str] = ()
    exclude_subjects: Sequence = ()
    since: dt.date | str | None = None
    until: dt.date | str | None = None
    where: Sequence[str | pc.Expression] = ()
    date_col: str | None = None

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("subjects", "categories", "exclude_subjects", "where"):
                if isinstance(value, (str, bytes, pc.Expression)):
                    raise TypeError(f"Filters({f.name}={value!r}): give a list, e.g. "
                                    f"{f.name}=[{value!r}]")
                object.__setattr__(self, f.name, tuple(value))

    def __bool__(self) -> bool:
        return bool(self.subjects or self.categories or self.exclude_subjects or self.where
                    or self.since is not None or self.until is not None)

    def and_exclude(self, subjects: Sequence) -> Filters:
        return replace(self, exclude_subjects=(*self.exclude_subjects, *subjects))

    def to_dict(self) -> dict:
        return {"subjects": list(self.subjects), "categories": list(self.categories),
                "exclude_subjects": list(self.exclude_subjects),
                "since": None if self.since is None else str(self.since),
                "until": None if self.until is None else str(self.until),
                "where": [str(w) for w in self.where], "date_col": self.date_col}

    def expression(self, store: MetadataStore) -> pc.Expression | None:
        """This filter as an expression over `store`'s columns, checked against it."""
        parts: list[pc.Expression] = []
        if self.subjects:
            parts.append(_membership(store, _role(store, "subject"), self.subjects,
                                     must_exist=True))
        if self.exclude_subjects:
            parts.append(~_membership(store, _role(store, "subject"), self.exclude_subjects,
                                      must_exist=False))
        if self.categories:
            parts.append(_categories(store, self.categories))
        if self.since is not None or self.until is not None:
            parts += _date_range(store, self.date_col or _role(store, "time"), self.since,
                                 self.until)
        for w in self.where:
            if isinstance(w, pc.Expression):
                parts.append(w)
            elif isinstance(w, str):
                parts.append(_condition(store, w))
            else:
                raise TypeError(f"where={w!r}: give 'COLUMN<op>VALUE' text or a "
                                "pyarrow.compute expression")
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = out & p
        return out


ROLE_NAMES = {"subject": "patient", "time": "date", "category": "category"}


def _role(store: MetadataStore, role: str) -> str:
    """The stored column of `role`, or an error saying the index has none."""
    col = store.schema.column(role)
    if col is None or col not in store.metadata_columns:
        raise ValueError(f"this index stores no {ROLE_NAMES.get(role, role)} column (role "
                         f"{role!r}; columns: {store.describe_columns()}); rebuild it with "
                         f"--columns {role}=COLUMN")
    return col


def _column(store: MetadataStore, name: str) -> pa.DataType:
    cols = store.metadata_columns
    if name in cols:
        return cols[name]
    folded = [c for c in cols if c.lower() == name.lower()]
    if len(folded) == 1:
        raise ValueError(f"no column {name!r}; did you mean {folded[0]!r}? "
                         f"(columns: {store.describe_columns()})")
    raise ValueError(f"no column {name!r} in this index; columns: {store.describe_columns()}")


def parse_value(store: MetadataStore, column: str, text, *, end_of_day: bool = False):
    """`text` as a value of `column`'s type (ints, dates, timestamps or strings)."""
    t = _column(store, column)
    if not isinstance(text, str):
        return text
    raw = text.strip()
    try:
        if pa.types.is_integer(t):
            if re.fullmatch(r"[+-]?[0-9]+(\.0+)?", raw) is None:
                raise ValueError
            return int(raw.split(".")[0])
        if pa.types.is_floating(t):
            return float(raw)
        if pa.types.is_date(t):
            return dt.date.fromisoformat(raw)
        if pa.types.is_timestamp(t):
            if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw):
                day = dt.date.fromisoformat(raw)
                return dt.datetime.combine(day, dt.time.max if end_of_day else dt.time.min)
            return dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{column} holds {t} values; {text!r} is not one") from None
    return text


def _membership(store: MetadataStore, column: str, values, *, must_exist: bool,
                fold_case: bool = False) -> pc.Expression:
    t = _column(store, column)
    parsed = [parse_value(store, column, v) for v in values]
    if fold_case and pa.types.is_string(t):
        parsed = [str(v).strip().lower() for v in parsed]
        target = pc.utf8_lower(pc.utf8_trim_whitespace(pc.field(column)))
    else:
        target = pc.field(column)
    try:
        value_set = pa.array(parsed, t if not fold_case else pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise ValueError(f"{column} holds {t} values; {list(values)!r} are not") from None
    if must_exist:
        present = store.value_counts(column)
        have = ({str(k).strip().lower() for k in present} if fold_case and
                pa.types.is_string(t) else set(present))
        unknown = [v for v, p in zip(values, parsed) if p not in have]
        if unknown:
            shown = sorted(present, key=str)[:SHOWN_VALUES]
            more = "" if len(present) <= SHOWN_VALUES else f", … ({len(present)} in all)"
            raise ValueError(f"{column} {unknown!r} not in this index; valid: "
                             f"{[str(v) for v in shown]}{more}")
    return pc.is_in(target, value_set=value_set)


def _categories(store: MetadataStore, categories) -> pc.Expression:
    return _membership(store, _role(store, "category"), categories, must_exist=True,
                       fold_case=True)


def _date_range(store: MetadataStore, column: str, since, until) -> list[pc.Expression]:
    t = _column(store, column)
    if not (pa.types.is_date(t) or pa.types.is_timestamp(t)):
        raise ValueError(f"since/until need a date column; {column} holds {t} values "
                         "(pass date_col / --date-col naming one)")
    out = []
    if since is not None:
        out.append(pc.field(column) >= pa.scalar(_bound(store, column, since, False), t))
    if until is not None:
        out.append(pc.field(column) <= pa.scalar(_bound(store, column, until, True), t))
    return out


def _bound(store, column, value, end_of_day):
    if isinstance(value, dt.datetime) and pa.types.is_date(store.metadata_columns[column]):
        return value.date()
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime) and \
            pa.types.is_timestamp(store.metadata_columns[column]):
        return dt.datetime.combine(value, dt.time.max if end_of_day else dt.time.min)
    return parse_value(store, column, value, end_of_day=end_of_day)


def _condition(store: MetadataStore, text: str) -> pc.Expression:
    m = _CONDITION.match(text)
    if m is None or not m.group(3):
        raise ValueError(f"where {text!r}: expected COLUMN<op>VALUE with op one of "
                         "= != >= <= > < (e.g. HADM_ID=134690, CHARTDATE>=2150-01-01, "
                         "CATEGORY=ECG,Echo)")
    column, op, value = m.groups()
    fold = column == store.schema.category
    if _OPS[op] in ("isin", "notin"):
        values = [v for v in value.split(",") if v.strip()]
        if not values:
            raise ValueError(f"where {text!r}: no value after {op!r}")
        e = _membership(store, column, values, must_exist=_OPS[op] == "isin"
                        and pa.types.is_string(_column(store, column)), fold_case=fold)
        return e if _OPS[op] == "isin" else ~e
    t = _column(store, column)
    parsed = parse_value(store, column, value, end_of_day=op in ("<=", ">"))
    return _OPS[op](pc.field(column), pa.scalar(parsed, t))
