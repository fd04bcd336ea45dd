"""One note schema: which column of a note table plays which role.

Every stage reads roles (the patient, the time, the category, …), never one hospital's
spelling of them. The layouts users hold are data, matched case-insensitively:

| role       | mimic-iii  | mimic-iv-note (discharge, radiology) | omop (CDM v5.4 NOTE) |
|------------|------------|--------------------------------------|----------------------|
| id         | ROW_ID     | note_id (text: `10000032-DS-21`)     | note_id              |
| subject    | SUBJECT_ID | subject_id                           | person_id            |
| admission  | HADM_ID    | hadm_id (null for many radiology)    | visit_occurrence_id  |
| category   | CATEGORY   | note_type (DS, AD, RR, AR)           | note_source_value    |
| time       | CHARTDATE  | charttime                            | note_date            |
| exact_time | CHARTTIME  | —                                    | note_datetime        |
| error      | ISERROR    | —                                    | —                    |
| sequence   | —          | note_seq                             | —                    |
| text       | TEXT       | text                                 | note_text            |

`time` is the column date filters apply to; `exact_time`, where a row has one, orders a
patient's notes within it (a missing one sorts first in its day). OMOP's category is
`note_source_value`, the source system's own note type as text (the OHDSI MIMIC conversion
puts MIMIC's CATEGORY there); `note_title` is often free text, and `note_class_concept_id`
needs the vocabulary to read. MIMIC-IV's addenda (note_type AD, AR) are indexed and
searched as notes of their own but never take part in next-note pairs, so a note is never
paired with its own addendum. Anything else: `--columns role=column,…` (`layout=NAME` picks a
layout where two fit; `role=` with no column drops one).
"""
from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class Role(str, enum.Enum):
    ID = "id"
    SUBJECT = "subject"
    ADMISSION = "admission"
    CATEGORY = "category"
    TIME = "time"
    EXACT_TIME = "exact_time"
    ERROR = "error"
    SEQUENCE = "sequence"
    TEXT = "text"


ROLES = tuple(r.value for r in Role)
CUSTOM = "custom"


@dataclass(frozen=True)
class Layout:
    """A known note table: its column for each role it has (matched case-insensitively),
    the id type its ids are, other columns worth keeping, and the category values that
    are addenda of another note."""

    name: str
    columns: Mapping[str, str]
    id_type: str = "int64"
    extra: tuple[str, ...] = ()
    addenda: tuple[str, ...] = ()


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("mimic-iii", {"id": "ROW_ID", "subject": "SUBJECT_ID", "admission": "HADM_ID",
                         "time": "CHARTDATE", "exact_time": "CHARTTIME",
                         "category": "CATEGORY", "error": "ISERROR", "text": "TEXT"}),
    Layout("mimic-iv-note", {"id": "note_id", "subject": "subject_id", "admission": "hadm_id",
                             "time": "charttime", "category": "note_type",
                             "sequence": "note_seq", "text": "text"},
           id_type="string", addenda=("AD", "AR")),
    Layout("omop", {"id": "note_id", "subject": "person_id", "admission": "visit_occurrence_id",
                    "time": "note_date", "exact_time": "note_datetime",
                    "category": "note_source_value", "text": "note_text"},
           extra=("note_title",)),
)}
FLAG = "--columns"
EXAMPLE = "--columns id=nid,subject=pt,admission=enc,time=written_at,category=kind,text=body"


COLUMNS_HELP = ("Roles of the note table's columns, for a table no layout fits or to "
                "change one: id, subject, admission, time, exact_time, category, error, "
                "sequence, text (e.g. id=nid,subject=pt,time=written_at,text=body; "
                "layout=mimic-iii|mimic-iv-note|omop picks a layout; role= drops one). "
                "Default: detected (MIMIC-III NOTEEVENTS, MIMIC-IV-Note, OMOP NOTE).")


class SchemaError(ValueError):
    """Input whose shape the command cannot take: columns that fit no layout or two, a role
    naming a column that is not there, files that do not fit together (one note id in
    two), a diagnosis revision other than ICD-9 or ICD-10. The CLI exits 2 (usage)."""


@dataclass(frozen=True)
class NoteSchema:
    """The columns of one note table by role (None: the table has none), as spelled there.
    Written into the embeddings, index and pairs manifests; a reader asks `schema.subject`,
    never a column name."""

    layout: str
    text: str | None
    id: str | None = None
    subject: str | None = None
    admission: str | None = None
    category: str | None = None
    time: str | None = None
    exact_time: str | None = None
    error: str | None = None
    sequence: str | None = None
    extra: tuple[str, ...] = ()
    addenda: tuple[str, ...] = ()
    id_type: str = "int64"
    kind: str = "mimicsearch-note-schema"

    def column(self, role: Role | str) -> str | None:
        return getattr(self, Role(role).value)

    def roles(self) -> dict[str, str]:
        """Role -> column, for the roles this table has."""
        return {r: c for r in ROLES if (c := getattr(self, r)) is not None}

    @property
    def metadata(self) -> tuple[str, ...]:
        """Columns kept beside each note: every role's but the id and the text, then extras."""
        cols = [c for r, c in self.roles().items() if r not in ("id", "text")]
        return tuple(dict.fromkeys([*cols, *self.extra]))

    def describe(self) -> str:
        return f"{self.layout} (" + ", ".join(f"{r}={c}" for r, c in self.roles().items()) + ")"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "layout": self.layout, "roles": self.roles(),
                "extra": list(self.extra), "addenda": list(self.addenda),
                "id_type": self.id_type}

    @classmethod
    def from_dict(cls, d: Mapping) -> NoteSchema:
        if d.get("kind") != "mimicsearch-note-schema":
            raise ValueError(f"note schema kind is {d.get('kind')!r}, expected "
                             "'mimicsearch-note-schema'")
        roles = dict(d.get("roles") or {})
        unknown = sorted(set(roles) - set(ROLES))
        if unknown:
            raise ValueError(f"note schema: unknown roles {unknown}; valid: {list(ROLES)}")
        return cls(layout=str(d["layout"]), extra=tuple(d.get("extra") or ()),
                   addenda=tuple(d.get("addenda") or ()),
                   id_type=str(d.get("id_type", "int64")),
                   **{"text": None, **{r: str(c) for r, c in roles.items()}})

    def stored(self, columns: Iterable[str]) -> NoteSchema:
        """This schema over an index store: the id is the store's `id`, the text is not a
        column there, and roles whose column the store lacks are dropped."""
        have = set(columns)
        roles = {r: c for r, c in self.roles().items() if r not in ("id", "text") and c in have}
        return NoteSchema(self.layout, None, "id", **roles,
                          extra=tuple(c for c in self.extra if c in have),
                          addenda=self.addenda, id_type=self.id_type)



def parse_columns(spec: str | Mapping | None) -> dict[str, str]:
    """`"id=nid,subject=pt"` (or a mapping) as {role: column}; `role=` maps it to ""
    (dropped); the pseudo-role `layout` names a layout."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, Mapping):
        items = [(str(k), "" if v is None else str(v)) for k, v in spec.items()]
    else:
        items = []
        for part in str(spec).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise SchemaError(f"{FLAG} {spec!r}: {part.strip()!r} is not ROLE=COLUMN "
                                  f"(e.g. {EXAMPLE})")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    out: dict[str, str] = {}
    for k, v in items:
        key = k.lower()
        if key not in (*ROLES, "layout"):
            raise SchemaError(f"{FLAG}: unknown role {k!r}; roles: {', '.join(ROLES)} "
                              "(and layout=" + "|".join(LAYOUTS) + ")")
        if key == "layout" and v not in LAYOUTS:
            raise SchemaError(f"{FLAG}: unknown layout {v!r}; layouts: {', '.join(LAYOUTS)}")
        if key in out:
            raise SchemaError(f"{FLAG}: role {key!r} given twice")
        out[key] = v
    return out


def column_matcher(columns: list[str], where: str):
    """`match(name)`: the column spelled `name` in any case (the exact spelling first), None
    where there is none, an error naming both where two differ only in case."""
    def match(name: str) -> str | None:
        if name in columns:
            return name
        found = [c for c in columns if c.lower() == name.lower()]
        if len(found) > 1:
            raise SchemaError(f"{where}: column {name!r} is ambiguous: {found}; name the one "
                              f"to use with {FLAG}")
        return found[0] if found else None
    return match


def _fits(layout: Layout, match) -> dict[str, str]:
    return {r: got for r, c in layout.columns.items() if (got := match(c)) is not None}


def _known() -> str:
    return "; ".join(f"{n}: {', '.join(lay.columns.values())}" for n, lay in LAYOUTS.items())


def detect(columns: Iterable[str], where: str = "input", mapping: str | Mapping | None = None
           ) -> NoteSchema:
    """The schema of a table with these `columns`: the known layout that fits most of its
    roles (its text column must be there; between equals, the one whose spelling matches
    case and all: MIMIC-III writes upper case, MIMIC-IV and OMOP lower), with `mapping`
    (`parse_columns`) on top.
    Raises SchemaError naming the columns found and the flag to use."""
    columns = [str(c) for c in columns]
    match = column_matcher(columns, where)
    given = parse_columns(mapping)
    chosen = given.pop("layout", None)
    fitting = []
    for name, layout in LAYOUTS.items():
        if chosen is not None and name != chosen:
            continue
        roles = _fits(layout, match)
        if roles and ("text" in roles or given.get("text")):
            exact = sum(layout.columns[r] == c for r, c in roles.items())
            fitting.append(((len(roles), exact), name, roles))
    if chosen is not None and not fitting:
        raise SchemaError(f"{where}: no text column of layout {chosen} "
                          f"({LAYOUTS[chosen].columns['text']}); columns: {columns}; "
                          f"name it with {FLAG} text=COLUMN")
    layout = None
    roles: dict[str, str] = {}
    if fitting:
        best = max(n for n, _, _ in fitting)
        top = [(name, r) for n, name, r in fitting if n == best]
        distinct = {tuple(sorted(r.items())) for _, r in top}
        if len(distinct) > 1 and not _settled(top, given):
            raise SchemaError(
                f"{where}: the columns fit {' and '.join(n for n, _ in top)} equally "
                f"(columns: {columns}); pick one with {FLAG} layout=NAME or name the roles "
                f"({EXAMPLE})")
        name, fitted = top[0]
        layout = LAYOUTS[name]
        roles = dict(fitted)
    for role, col in given.items():
        if col == "":
            roles.pop(role, None)
            continue
        got = match(col)
        if got is None:
            raise SchemaError(f"{where}: {FLAG} {role}={col}: no column {col!r}; columns: "
                              f"{columns}")
        roles[role] = got
    if "text" not in roles:
        raise SchemaError(
            f"{where}: the columns {columns} fit no known note layout ({_known()}); name the "
            f"roles with {FLAG} (e.g. {EXAMPLE})")
    if list(roles.values()).count(roles["text"]) > 1:
        raise SchemaError(f"{where}: column {roles['text']!r} is the text and another role; "
                          f"give each role its own column with {FLAG}")
    if layout is None:
        name = CUSTOM
    else:
        name = layout.name if roles == fitted else f"{layout.name}+columns"
    extra = () if layout is None else tuple(
        c for e in layout.extra if (c := match(e)) is not None and c not in roles.values())
    id_type = "string" if layout is None else layout.id_type
    return NoteSchema(name, extra=extra, addenda=() if layout is None else layout.addenda,
                      id_type=id_type, **roles)


def _settled(top, given: dict) -> bool:
    """Whether the roles the user named decide between equally fitting layouts."""
    return bool(given) and len({tuple(sorted({**r, **given}.items())) for _, r in top}) == 1


def for_store(columns: Iterable[str], recorded: NoteSchema | None = None) -> NoteSchema:
    """The schema of an index store: the one its manifest records, or for an index built
    before schemas were recorded, the layout its stored columns fit (MIMIC-III's as
    before)."""
    columns = list(columns)
    if recorded is not None:
        return recorded.stored(columns)
    match = column_matcher(columns, "index store")
    best = None
    for layout in LAYOUTS.values():
        roles = {r: c for r, c in _fits(layout, match).items() if r not in ("id", "text")}
        if best is None or len(roles) > len(best[1]):
            best = (layout, roles)
    layout, roles = best
    return NoteSchema(layout.name, None, "id", **roles, addenda=layout.addenda,
                      id_type=layout.id_type)


def role_values(schema: NoteSchema, record: Mapping) -> tuple:
    """(subject, admission, category, time) of one store record: the roles hits and notes
    carry as fields, named the same for every layout (None where not stored)."""
    return tuple(record.get(c) if c else None for c in
                 (schema.subject, schema.admission, schema.category, schema.time))


def sort_time(table, schema: NoteSchema):
    """One timestamp per row that orders a patient's notes: the exact time where the row
    has one, else the start of its `time` (null where the table has no time role)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def as_time(name):
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            return col.cast(pa.timestamp("us"))
        if pa.types.is_date(col.type):
            return col.cast(pa.timestamp("us"))
        return pc.cast(pc.strptime(col.cast(pa.string()), "%Y-%m-%d", "us", error_is_null=True),
                       pa.timestamp("us"))

    have = set(table.column_names)
    parts = [as_time(c) for c in (schema.exact_time, schema.time) if c and c in have]
    if not parts:
        return pa.nulls(table.num_rows, pa.timestamp("us"))
    return pc.coalesce(*parts) if len(parts) > 1 else parts[0]


def timeline(table, schema: NoteSchema, *, by_subject: bool = True, row: str = "row"):
    """`table` (store or note rows with the schema's columns and `row`) in time order:
    patient, then `sort_time`, then sequence, then `row` (nulls last) — the order of a
    patient's notes for next-note pairs, calibration and the timeline."""
    import pyarrow.compute as pc

    t = table.append_column("__time", sort_time(table, schema))
    keys = ([schema.subject] if by_subject and schema.subject else []) + ["__time"]
    if schema.sequence and schema.sequence in t.column_names:
        keys.append(schema.sequence)
    keys.append(row)
    order = pc.sort_indices(t, sort_keys=[(k, "ascending", "at_end") for k in keys])
    return table.take(order)


def pairable(table, schema: NoteSchema):
    """Rows that may be one side of a next-note pair: a patient's, not marked in error,
    not an addendum of another note."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keep = pc.is_valid(table.column(schema.subject))
    if schema.error and schema.error in table.column_names:
        err = table.column(schema.error).cast(pa.string())
        keep = pc.and_(keep, pc.invert(pc.fill_null(pc.equal(pc.utf8_trim_whitespace(err),
                                                             "1"), False)))
    if schema.addenda and schema.category and schema.category in table.column_names:
        cat = pc.utf8_upper(pc.utf8_trim_whitespace(table.column(schema.category).cast(
            pa.string())))
        keep = pc.and_(keep, pc.invert(pc.fill_null(
            pc.is_in(cat, pa.array([a.upper() for a in schema.addenda])), False)))
    return table.filter(keep)


detect_schema = detect  # the package-level name: `mimicsearch.detect_schema(columns)`
