"""The application: routes over one `Searcher` and one batching encoder.

Index work (search, note reads, reloads) runs on one thread, so a reload after another
process's add/remove/sync swaps the whole index between requests, never under one; encoder
work runs on another, fed by the batcher. Every error is JSON in one shape (guard.error_body)
with a 4xx status naming the field and the fix; an unexpected one is a 500 whose log line
names the exception type only, never the text that caused it.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.compute as pc
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .. import __version__
from .. import cohort as cohorts
from ..filters import Filters, parse_value
from ..calibrate import Setting
from ..fusion import AUTO
from ..search import Searcher
from .batcher import Batcher
from .guard import Guard, error_body
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .schemas import (
    CohortRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    NoteBody,
    PatientSearchRequest,
    PatientSearchResponse,
    SearchRequest,
    SearchResponse,
    SimilarPatients,
    Timeline,
)
from .settings import ServeSettings

log = logging.getLogger("mimicsearch.serve")


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class Server:
    """What the routes share: the searcher, its two threads, the batcher, the metrics."""

    def __init__(self, index_dir: str | Path, settings: ServeSettings):
        self.settings = settings
        self.metrics = Metrics()
        self.index_pool = ThreadPoolExecutor(1, thread_name_prefix="index")
        self.encoder_pool = ThreadPoolExecutor(1, thread_name_prefix="encoder")
        self.searcher = Searcher(index_dir, model_dir=settings.model_dir,
                                 verify=settings.verify, mmap=True, threads=settings.threads)
        self.batcher: Batcher | None = None

    async def on_index(self, fn, *args):
        """Run `fn` on the index thread after picking up any committed change."""
        def call():
            if self.searcher.reload():
                self.metrics.reloads.inc()
            return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self.index_pool, call)

    async def start(self) -> None:
        encoder = await asyncio.get_running_loop().run_in_executor(
            self.encoder_pool, lambda: self.searcher.encoder)
        s = self.settings
        self.batcher = Batcher(lambda: self.searcher.encoder, self.encoder_pool,
                               wait_s=s.batch_wait_ms / 1000, max_batch=s.max_batch,
                               token_budget=min(s.batch_tokens, encoder.token_budget),
                               max_length=encoder.max_seq_length, enabled=s.batching,
                               on_batch=self.metrics.batch)
        self.batcher.start()

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self.index_pool.shutdown(wait=False, cancel_futures=True)
        self.encoder_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def encoder(self):
        return self.searcher.encoder

    def model_names(self) -> list[str]:
        """Ids a request may name the model by: the hub id it was exported from (where it
        has one) first, then its directory's name."""
        source = self.encoder.manifest.source_model
        hub_like = source.count("/") == 1 and not source.startswith((".", "/", "~"))
        return list(dict.fromkeys([*([source] if hub_like else []),
                                   Path(self.encoder.model_dir).name]))


def create_app(index_dir: str | Path, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app serving `index_dir` (opened and verified here, the model on startup)."""
    settings = settings or ServeSettings()
    server = Server(index_dir, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await server.start()
        yield
        await server.stop()

    app = FastAPI(title="mimicsearch", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="Search clinical notes by meaning, read them with their "
                  "patient's timeline, and embed text with an OpenAI-compatible route. "
                  "Research use only: the notes are clinical data.")
    app.state.server = server
    _errors(app)
    _routes(app, server)
    _page(app)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes,
                       metrics=server.metrics)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse(error_body(e.status, e.message, e.param, e.code), e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(400, "the body is not valid JSON: "
                                           f"{first.get('ctx', {}).get('error', '')}".strip()),
                                400)
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        if first.get("type") == "missing" and not loc:
            return JSONResponse(error_body(400, "send a JSON object body"), 400)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        message = f"{param or 'body'}: {first.get('msg')}{more}"
        if first.get("type") == "extra_forbidden":
            message = (f"unknown field {param!r}; see /docs for the fields this route takes"
                       f"{more}")
        return JSONResponse(error_body(422, message, param), 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        message = e.detail if isinstance(e.detail, str) else "request refused"
        if e.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path!r}; see /docs"
        if e.status_code == 405:
            message = f"{request.method} is not allowed here; see /docs"
        return JSONResponse(error_body(e.status_code, message), e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        log.error("internal error on %s: %s", request.scope.get("route", None) and
                  request.scope["route"].path, type(e).__name__)
        return JSONResponse(error_body(500, f"internal error ({type(e).__name__}); the "
                                       "server log has its type, not its text"), 500)


def _note_dict(note) -> dict:
    d = note.to_dict()
    d.pop("row", None)
    return d


def _routes(app: FastAPI, server: Server) -> None:
    s = server.settings

    def checked_text(text: str, param: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, f"{param} is empty: give some text", param)
        if len(text) > s.max_text_chars:
            raise ApiError(413, f"{param} has {len(text)} characters; the server takes at "
                           f"most {s.max_text_chars} (--max-text-chars)", param)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, f"{param} is not valid UTF-8 text", param) from None
        return text

    def k_of(k: int) -> int:
        if k > s.max_k:
            raise ApiError(400, f"k={k}: this server returns at most {s.max_k} hits (--max-k)",
                           "k")
        return k

    def note_error(e: ValueError) -> ApiError:
        """A note lookup's ValueError: an id the index does not hold (404) or not of its id
        type (400)."""
        return ApiError(404 if "not in the index" in str(e) else 400, str(e), "note_id")

    def hit_dict(h) -> dict:
        return {"rank": h.rank, "id": h.id, "score": h.score, "subject": h.subject,
                "admission": h.admission, "category": h.category, "time": h.time,
                "snippet": h.snippet, "metadata": h.metadata, "retrievers": h.retrievers}

    def patient_dict(p) -> dict:
        return {"rank": p.rank, "subject": p.subject, "score": p.score,
                "notes": p.notes, "best": hit_dict(p.best),
                "matches": [hit_dict(m) for m in p.matches], "admissions": p.admissions,
                "categories": p.categories, "first_date": p.first_date,
                "last_date": p.last_date, "retrievers": p.retrievers}

    def filters_of(req) -> Filters:
        return Filters(subjects=req.subjects, categories=req.categories,
                       exclude_subjects=req.exclude_subjects, since=req.since,
                       until=req.until, where=req.where, date_col=req.date_col)

    def hits_of(results) -> list[dict]:
        return [hit_dict(h) for h in (results[0] if results else [])]

    async def setting_of(req, patients: bool = False) -> tuple[Setting, dict | None]:
        """What a request runs: its mode with auto resolved, the fusion completed from
        the index's own, and (where auto ran) what the index chose and measured."""
        overrides = {} if req.fusion is None else req.fusion.model_dump(exclude_none=True)
        if overrides and req.mode not in ("hybrid", AUTO):
            raise ApiError(400, "fusion applies to mode 'hybrid' (or 'auto', which it "
                           "makes a hybrid)", "fusion")

        def resolve():
            searcher = server.searcher
            try:
                fusion = searcher.fusion_for(**overrides) if overrides else None
            except ValueError as e:
                raise ApiError(400, str(e), "fusion") from None
            try:
                mode, fusion = searcher.resolve(req.mode, fusion, patients)
            except ValueError as e:
                raise ApiError(400, str(e), "mode") from None
            auto = (searcher.describe_auto(patients) if req.mode == AUTO and not overrides
                    else None)
            return Setting(mode, fusion), auto
        return await server.on_index(resolve)

    async def run_search(req: SearchRequest) -> dict:
        with server.batcher.coming() as ticket:
            return await _run_search(req, ticket)

    async def _run_search(req: SearchRequest, ticket) -> dict:
        started = time.perf_counter()
        setting, auto = await setting_of(req)
        mode, fusion = setting.mode, setting.fusion
        if (req.text is None) == (req.note_id is None):
            raise ApiError(400, "give either text or note_id (one of them)", "text")
        k = k_of(req.k)
        filters = filters_of(req)
        try:
            if req.text is not None:
                if req.other_patients_only:
                    raise ApiError(400, "other_patients_only applies to note_id queries; "
                                   "with text, use exclude_subjects", "other_patients_only")
                text = checked_text(req.text, "text")
                # Filter errors before encoding: compiling the filter checks it; the row
                # mask is built once, by the search.
                await server.on_index(lambda: filters.expression(server.searcher.index.store))
                vectors = None
                if mode != "lexical":
                    vectors, _ = await server.batcher.encode([text], "query",
                                                             server.searcher.index.dim, ticket)
                results = await server.on_index(
                    lambda: server.searcher.search_texts([text], k, filters, mode=mode,
                                                         fusion=fusion, vectors=vectors))
                query = {"text_chars": len(text)}
            else:
                try:
                    results = await server.on_index(
                        lambda: server.searcher.search_notes(
                            [req.note_id], k, filters, req.other_patients_only,
                            mode=mode, fusion=fusion))
                except ValueError as e:
                    if str(e).startswith("note id "):  # the query note's own lookup
                        raise note_error(e) from None
                    raise
                query = {"note_id": req.note_id}
        except (ValueError, TypeError) as e:
            raise ApiError(400, str(e)) from None
        return {"mode": mode, "setting": setting.label, "auto": auto,
                "fusion": None if fusion is None else fusion.to_dict(),
                "k": k, "query": query, "filters": filters.to_dict(),
                "hits": hits_of(results),
                "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    @app.post("/search", response_model=SearchResponse, tags=["search"],
              summary="Notes like a text or a stored note, with filters")
    async def search(req: SearchRequest):
        return await run_search(req)

    @app.get("/notes/{note_id}", response_model=NoteBody, tags=["notes"],
             summary="One note, whole, with its metadata")
    async def note(note_id: str):
        try:
            found = await server.on_index(server.searcher.notes, [note_id], True)
        except ValueError as e:
            raise note_error(e) from None
        return _note_dict(found[0])

    @app.get("/notes/{note_id}/similar", response_model=SearchResponse, tags=["notes"],
             summary="More like this note")
    async def similar(note_id: str, k: int = Query(10, ge=1),
                      other_patients_only: bool = False,
                      mode: Literal["auto", "dense", "lexical", "hybrid"] = AUTO):
        try:  # the path's text as the index's id type
            typed = await server.on_index(
                lambda: server.searcher.index.store.parse_ids([note_id])[0])
        except ValueError as e:
            raise note_error(e) from None
        return await run_search(SearchRequest(note_id=typed, k=k, mode=mode,
                                              other_patients_only=other_patients_only))

    async def find_patients(req: PatientSearchRequest, ticket) -> tuple:
        """(the query as the response names it, the filters, the setting that ran and what
        auto chose, the patients, the index fingerprint they came from) for a patient
        search request."""
        setting, auto = await setting_of(req, patients=True)
        mode, fusion = setting.mode, setting.fusion
        given = [n for n in ("text", "note_id", "subject_id") if getattr(req, n) is not None]
        if len(given) != 1:
            raise ApiError(400, "give exactly one of text, note_id or subject_id",
                           given[1] if len(given) > 1 else "text")
        k = k_of(req.k)
        filters = filters_of(req)
        vector = None
        try:
            await server.on_index(lambda: filters.expression(server.searcher.index.store))
        except (ValueError, TypeError) as e:
            raise ApiError(400, str(e)) from None
        try:
            if req.text is not None:
                checked_text(req.text, "text")
                if mode != "lexical":
                    vectors, _ = await server.batcher.encode(
                        [req.text], "query", server.searcher.index.dim, ticket)
                    vector = vectors[0]

            def find():
                subject = req.subject_id
                if subject is not None:  # as the column's type, as filters read it
                    store = server.searcher.index.store
                    if store.schema.subject is not None:
                        subject = parse_value(store, store.schema.subject, str(subject))
                found = server.searcher.similar_patients(
                    req.text, note_id=req.note_id, subject_id=subject, k=k,
                    filters=filters, mode=mode, fusion=fusion, vector=vector)
                return subject, found, server.searcher.fingerprint
            subject, patients, fingerprint = await server.on_index(find)
        except ValueError as e:
            message = str(e)
            if message.startswith("note id "):
                raise note_error(e) from None
            if "not in this index" in message or "no notes left" in message:
                raise ApiError(404, message, "subject_id") from None
            raise ApiError(400, message) from None
        query = ({"text_chars": len(req.text)} if req.text is not None else
                 {"note_id": req.note_id} if req.note_id is not None else
                 {"subject_id": subject})
        return query, filters, setting, auto, patients, fingerprint

    @app.post("/patients/search", response_model=PatientSearchResponse, tags=["patients"],
              summary="Patients like a text, a stored note or a patient, with filters")
    async def search_patients(req: PatientSearchRequest):
        started = time.perf_counter()
        with server.batcher.coming() as ticket:
            query, filters, setting, auto, patients, _ = await find_patients(req, ticket)
        return {"mode": setting.mode, "setting": setting.label, "auto": auto, "k": req.k,
                "query": query, "filters": filters.to_dict(),
                "fusion": None if setting.fusion is None else setting.fusion.to_dict(),
                "patients": [patient_dict(p) for p in patients],
                "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    @app.post("/cohorts/export", tags=["patients"], response_class=Response,
              summary="A patient search as a cohort file (CSV or Parquet)",
              responses={200: {"content": {cohorts.MEDIA_TYPES["csv"]: {},
                                           cohorts.MEDIA_TYPES["parquet"]: {}},
                               "description": "A row per patient (rank, subject, score, "
                               "notes, admissions, first/last date, categories, its best "
                               "notes' ids) and the request, index fingerprint and time."}})
    async def export_cohort(req: CohortRequest):
        with server.batcher.coming() as ticket:
            query, filters, setting, _, patients, fingerprint = await find_patients(req,
                                                                                    ticket)
        text = {"text": req.text} if req.text is not None else {}
        try:
            cohort = cohorts.build(patients, query={**text, **query}, mode=setting.mode,
                                   fusion=setting.fusion, filters=filters, k=req.k,
                                   index=fingerprint, select=req.select, name=req.name)
        except ValueError as e:
            raise ApiError(400, str(e), "select") from None
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", req.name or "cohort").strip("-.")[:80]
        return Response(cohorts.to_bytes(cohort, req.format),
                        media_type=cohorts.MEDIA_TYPES[req.format],
                        headers={"Content-Disposition":
                                 f'attachment; filename="{name or "cohort"}.{req.format}"'})

    @app.get("/patients/{subject_id}/similar", response_model=SimilarPatients,
             tags=["patients"], summary="Patients like this one (never itself)")
    async def similar_patients(subject_id: str, k: int = Query(10, ge=1),
                               mode: Literal["auto", "dense", "lexical", "hybrid"] = AUTO):
        started = time.perf_counter()
        with server.batcher.coming() as ticket:
            query, _, setting, auto, patients, _ = await find_patients(
                PatientSearchRequest(subject_id=subject_id, k=k, mode=mode), ticket)
        return {"subject": query["subject_id"], "mode": setting.mode,
                "setting": setting.label, "auto": auto,
                "patients": [patient_dict(p) for p in patients],
                "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    @app.get("/patients/{subject_id}/timeline", response_model=Timeline, tags=["patients"],
             summary="A patient's notes in time order")
    async def timeline(subject_id: str):
        try:
            notes = await server.on_index(server.searcher.timeline, subject_id)
        except ValueError as e:
            status = 404 if "not in this index" in str(e) else 400
            raise ApiError(status, str(e), "subject_id") from None
        return {"subject": notes[0].subject, "count": len(notes),
                "notes": [_note_dict(n) for n in notes]}

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, tags=["embeddings"],
              summary="OpenAI-compatible embeddings")
    async def embeddings(req: EmbeddingsRequest):
        with server.batcher.coming() as ticket:
            return await _embeddings(req, ticket)

    async def _embeddings(req: EmbeddingsRequest, ticket):
        names = server.model_names()
        if req.model not in names:
            raise ApiError(404, f"model {req.model!r} is not served here; models: {names}",
                           "model", "model_not_found")
        inputs = [req.input] if isinstance(req.input, str) else list(req.input)
        if not inputs:
            raise ApiError(400, "input is an empty list: give at least one text", "input")
        if not all(isinstance(t, str) for t in inputs):
            raise ApiError(400, "input holds token ids; this server takes text only", "input")
        if len(inputs) > s.max_inputs:
            raise ApiError(413, f"input has {len(inputs)} texts; at most {s.max_inputs} per "
                           "request (--max-inputs)", "input")
        for i, t in enumerate(inputs):
            checked_text(t, f"input[{i}]")
        try:
            dim = server.encoder.check_dim(req.dimensions)
        except ValueError as e:
            raise ApiError(400, str(e), "dimensions") from None
        vectors, counts = await server.batcher.encode(inputs, req.input_type, dim, ticket)
        data = []
        for i, v in enumerate(vectors):
            v = np.ascontiguousarray(v, dtype="<f4")
            data.append({"object": "embedding", "index": i, "embedding":
                         base64.b64encode(v.tobytes()).decode("ascii")
                         if req.encoding_format == "base64" else v.tolist()})
        used = int(sum(counts))
        # Returned as is: response_model validation of every float costs more than encoding.
        return JSONResponse({"object": "list", "data": data, "model": req.model,
                             "usage": {"prompt_tokens": used, "total_tokens": used}})

    @app.get("/v1/models", tags=["embeddings"], summary="Models served (OpenAI-compatible)")
    async def models():
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0,
                                            "owned_by": "mimicsearch"}
                                           for n in server.model_names()]}

    @app.get("/health", tags=["server"], summary="Liveness")
    async def health():
        return {"status": "ok"}

    @app.get("/info", tags=["server"], summary="The index, model, modes, facets and limits")
    async def info():
        def describe():
            index = server.searcher.index
            store = index.store
            columns = {n: str(t) for n, t in store.metadata_columns.items()}
            dates = None
            time = store.schema.time
            if time in columns:
                mm = pc.min_max(store.notes_table([time]).column(time)).as_py()
                dates = {"column": time, "min": mm["min"], "max": mm["max"]}
            notes = len(store.ids())
            server.metrics.notes.set(notes)
            auto = {"notes": server.searcher.describe_auto(),
                    "patients": server.searcher.describe_auto(patients=True)}
            return (index, store, columns, dates, notes, server.searcher.modes, auto,
                    store.schema)

        index, store, columns, dates, notes, modes, auto, schema = await server.on_index(
            describe)
        enc = server.encoder
        m = index.manifest
        return jsonable_encoder({
            "version": __version__,
            "notes": notes,
            "index": {"key": m.index_key, "dimension": m.dimension, "rows": m.rows},
            "model": {"id": server.model_names()[0], "dimension": enc.dimension,
                      "dimensions": enc.dims, "precision": enc.precision,
                      "runtime": enc.runtime.value, "max_seq_length": enc.max_seq_length},
            "modes": [AUTO, *modes], "auto": auto, "columns": columns,
            "schema": {"layout": schema.layout, "roles": schema.roles()},
            "categories": store.categories(),
            "dates": dates, "full_text": store.texts.kept, "auth": s.auth,
            "limits": {"max_k": s.max_k, "max_body_bytes": s.max_body_bytes,
                       "max_text_chars": s.max_text_chars, "max_inputs": s.max_inputs}})

    @app.get("/metrics", tags=["server"], summary="Prometheus metrics")
    async def metrics():
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _page(app: FastAPI) -> None:
    page = resources.files("mimicsearch.serve") / "page"
    app.mount("/static", StaticFiles(directory=str(page)), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index_page():
        return FileResponse(str(page / "index.html"), media_type="text/html")

    try:
        import swagger_ui_bundle
    except ImportError:  # the page still works; only the interactive API page is missing
        return
    app.mount("/docs/static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="mimicsearch API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")

