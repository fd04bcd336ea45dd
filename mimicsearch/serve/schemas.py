"""Request and response bodies of the API (they are also its OpenAPI description).

Requests forbid unknown fields, so a misspelt filter is an error, not an ignored one.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NoteId = int | str


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FusionBody(_Request):
    """How a hybrid fuses the dense and lexical lists (the Python `Fusion`): the settings
    given; the rest are the fusion this index measured best (else RRF k 60, equal
    weights, depth 100). Naming another method starts from that method's defaults."""

    method: Literal["rrf", "weighted", "zscore"] | None = Field(
        None, description="rrf: sum of weight/(k + rank); weighted: sum of weight x the "
        "min-max scaled score; zscore: the same over standardised scores.")
    k: int | None = Field(None, ge=1, description="RRF's constant.")
    dense_weight: float | None = Field(None, ge=0)
    lexical_weight: float | None = Field(None, ge=0)
    depth: int | None = Field(None, ge=1, description="Candidates taken from each retriever.")


class _Filters(_Request):
    """The filters every search route takes."""

    subjects: list[NoteId] = Field([], description="Only these SUBJECT_IDs.")
    exclude_subjects: list[NoteId] = Field([], description="Leave out these SUBJECT_IDs.")
    categories: list[str] = Field([], description="Only these CATEGORY values "
                                  "(case-insensitive).")
    since: dt.date | None = Field(None, description="Earliest date (inclusive) of date_col.")
    until: dt.date | None = Field(None, description="Latest date (inclusive) of date_col.")
    where: list[str] = Field([], description="Conditions on any stored column: "
                             "'HADM_ID=134690', 'CHARTDATE>=2150-01-01', 'CATEGORY!=ECG'.")
    date_col: str | None = Field(None, description="The column since/until apply to; by "
                                 "default the index's time role (CHARTDATE, charttime, …).")


class SearchRequest(_Filters):
    """Give `text` (a clinical question or passage) or `note_id` (more like a stored note)."""

    text: str | None = Field(None, description="Query text, encoded with the query prompt.")
    note_id: NoteId | None = Field(None, description="Use this stored note as the query; "
                                   "it never comes back itself.")
    k: int = Field(10, ge=1, description="Notes to return (at most the server's max_k).")
    mode: Literal["auto", "dense", "lexical", "hybrid"] = Field(
        "auto", description="auto: the setting this index chose on its own notes (/info "
        "says which); dense (the model), lexical (BM25 over whole notes) or hybrid (both, "
        "fused); /info lists the modes this index has.")
    fusion: FusionBody | None = Field(None, description="Hybrid (or auto, made a hybrid): "
                                      "fusion settings to change.")
    other_patients_only: bool = Field(False, description="With note_id: leave out every "
                                      "note of the query note's patient.")


class PatientSearchRequest(_Filters):
    """Patients like a text, a stored note or a patient: give one of `text`, `note_id`,
    `subject_id`. Filters choose the notes candidates are judged by."""

    text: str | None = Field(None, description="Query text.")
    note_id: NoteId | None = Field(None, description="Patients like this note's patient.")
    subject_id: NoteId | None = Field(None, description="Patients like this one (all its "
                                      "notes are the query); it never comes back itself.")
    k: int = Field(10, ge=1, description="Patients to return (at most the server's max_k).")
    mode: Literal["auto", "dense", "lexical", "hybrid"] = Field(
        "auto", description="auto: the setting chosen on this index's patients by their "
        "diagnoses, else lexical; dense: cosine of pooled patient vectors; lexical: BM25 "
        "of each patient's notes as one document; hybrid: both, fused.")
    fusion: FusionBody | None = Field(None, description="Hybrid (or auto, made a hybrid): "
                                      "fusion settings to change.")


class CohortRequest(PatientSearchRequest):
    """A patient search's request, and which of its patients make the cohort: the file is
    that search re-run, so the same request gives the same cohort."""

    select: list[NoteId] | None = Field(None, description="SUBJECT_IDs of the returned "
                                        "patients to keep (default all); one not returned "
                                        "is an error.")
    name: str | None = Field(None, max_length=200, description="The cohort's name.")
    format: Literal["csv", "parquet"] = Field("csv", description="The file's format.")


class Retriever(BaseModel):
    rank: int | None = Field(description="Rank in this retriever's list; null where the "
                             "note was outside its candidates.")
    score: float | None = Field(description="This retriever's score; null where unknown.")


class SearchHit(BaseModel):
    rank: int
    id: NoteId
    score: float
    subject: NoteId | None = Field(description="The patient (role subject: SUBJECT_ID, "
                                   "subject_id, person_id, …).")
    admission: NoteId | None = Field(description="The admission or visit (HADM_ID, hadm_id, "
                                     "visit_occurrence_id, …).")
    category: str | None = Field(description="The note's category (CATEGORY, note_type, "
                                 "note_source_value, …).")
    time: Any = Field(description="The note's time role (CHARTDATE, charttime, note_date, "
                      "…).")
    snippet: str | None
    metadata: dict[str, Any] = Field(description="Every stored column under its source name.")
    retrievers: dict[str, Retriever] = Field(
        description="Each retriever's rank and score for this note (score provenance).")


class SearchResponse(BaseModel):
    mode: str = Field(description="The mode that ran (auto resolved).")
    setting: str = Field(description="The mode and fusion that ran, as a short label.")
    fusion: dict[str, Any] | None = None
    auto: dict[str, Any] | None = Field(None, description="Where auto ran: what the index "
                                        "chose and what it measured.")
    k: int
    query: dict[str, Any]
    filters: dict[str, Any]
    hits: list[SearchHit]
    took_ms: float


class SimilarPatient(BaseModel):
    rank: int
    subject: NoteId
    score: float = Field(description="dense: cosine of pooled patient vectors; lexical: "
                         "BM25 of its notes as one document; hybrid: fused.")
    notes: int = Field(description="Its notes judged (those the filters let through).")
    best: SearchHit = Field(description="Its note nearest the query (dense) or best-ranked.")
    matches: list[SearchHit] = Field(default_factory=list, description="Its best notes for "
                                     "the query (up to 3), best first.")
    admissions: list[NoteId] = Field(default_factory=list,
                                     description="Admissions of the notes judged.")
    categories: list[str] = Field(default_factory=list,
                                  description="Categories of the notes judged, most first.")
    first_date: Any = Field(None, description="The earliest time of the notes judged.")
    last_date: Any = Field(None, description="The latest time of the notes judged.")
    retrievers: dict[str, Retriever] = Field(
        default_factory=dict, description="Each retriever's rank and score of the patient.")


class SimilarPatients(BaseModel):
    subject: NoteId
    mode: str
    setting: str
    auto: dict[str, Any] | None = None
    patients: list[SimilarPatient]
    took_ms: float


class PatientSearchResponse(BaseModel):
    mode: str
    setting: str
    auto: dict[str, Any] | None = None
    k: int
    query: dict[str, Any]
    filters: dict[str, Any]
    fusion: dict[str, Any] | None
    patients: list[SimilarPatient]
    took_ms: float


class NoteBody(BaseModel):
    id: NoteId
    subject: NoteId | None
    admission: NoteId | None
    category: str | None
    time: Any
    snippet: str | None
    text: str | None = Field(description="The whole note; null where the index keeps only "
                             "openings (build-index --no-full-text).")
    metadata: dict[str, Any]


class Timeline(BaseModel):
    subject: NoteId
    count: int
    notes: list[NoteBody]


class EmbeddingsRequest(_Request):
    """OpenAI's embeddings request; `input_type` is this server's addition."""

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts (token arrays are not accepted).")
    model: str = Field(description="A model id from GET /v1/models.")
    dimensions: int | None = Field(None, description="Matryoshka dimension (see /info).")
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    input_type: Literal["query", "document"] = Field(
        "document", description="The model's prompt: 'query' for questions, 'document' for "
        "notes and passages.")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
