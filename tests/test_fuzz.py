"""Bad input, property-based: whatever a client sends, the answer is a documented status with
the standard JSON error body, never a 500, and nothing that failed validation is stored.

Hypothesis builds request bodies as raw bytes, so that what a JSON encoder would never write
(NaN, duplicate keys, lone surrogates, non-UTF-8, truncation, absurd nesting) is sent as well.
The example counts come from the `inbox` settings profile (tests/conftest.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import requests
from hypothesis import event, given
from hypothesis import strategies as st

from .conftest import make_config
from .live import LiveServer, live_server

DOCUMENTED = {200, 400, 401, 403, 404, 413, 415, 422}
MAX_BODY = 20_000  # a small MAX_BODY_BYTES, so that over-limit bodies are cheap to make


@pytest.fixture
def api(database_url: str) -> Iterator[LiveServer]:
    with live_server(
        make_config(database_url, MAX_BODY_BYTES=str(MAX_BODY)), database_url
    ) as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def sync_db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def counts(db: psycopg.Connection[Any]) -> tuple[int, int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM objects), (SELECT count(*) FROM alerts),"
        " (SELECT count(*) FROM object_alerts)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


# -- strategies -------------------------------------------------------------------------------

nasty_text = st.text(
    st.characters(codec="utf-8") | st.sampled_from("\x00\x01\x1f\x7f\u2028\u202e\ufeff\uffff"),
    max_size=40,
)
long_text = st.integers(1, 30_000).map(lambda n: "x" * n)
huge_int = st.integers(min_value=-(2**80), max_value=2**80) | st.sampled_from(
    [0, -1, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**30]
)
scalars = (
    st.none()
    | st.booleans()
    | huge_int
    | st.floats(allow_nan=False, allow_infinity=False)
    | nasty_text
    | long_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)
emails = st.sampled_from(
    ["bob@example.com", "Bob@EXAMPLE.COM", "ünï@exämple.com", "a@b", "", "@", "x" * 400 + "@e.com"]
) | nasty_text.map(lambda t: t + "@example.com")
phones = (
    st.sampled_from(
        ["212-555-1234", "+44 20 7946 0958", "+1 212 555 123456789", "", "555-0000", "٢١٢٥٥٥١٢٣٤"]
    )
    | nasty_text
)
ids = st.lists(huge_int | st.integers(1, 5), max_size=8) | st.lists(
    st.integers(1, 3), min_size=200, max_size=3000
)


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A JSON object with each known field present (well-typed or not) or missing, and extras."""
    field_values = {
        name: st.one_of(st.just(Ellipsis), strategy, json_values)
        for name, strategy in fields.items()
    }

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        body = {name: draw(value) for name, value in field_values.items()}
        body = {k: v for k, v in body.items() if v is not Ellipsis}
        body.update(draw(st.dictionaries(nasty_text, json_values, max_size=2)))
        return body

    return build() | json_values


def encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


@st.composite
def raw_bodies(
    draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]], valid: st.SearchStrategy[Any]
) -> bytes:
    """The body as bytes: usually JSON, sometimes JSON a strict encoder would never produce."""
    value = draw(valid | bodies(fields))
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=False)
    kind = draw(
        st.sampled_from(
            ["plain"] * 6
            + ["nan", "duplicate", "surrogate", "nul", "deep", "latin1", "truncate", "big", "array"]
        )
    )
    name = draw(st.sampled_from(sorted(fields)))
    if kind == "nan":
        text = '{{"{}": {}}}'.format(
            name,
            draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"])),
        )
    elif kind == "duplicate" and isinstance(value, dict):
        text = (
            "{"
            + ", ".join(
                [
                    f'"{name}": 1',
                    *(f"{encode(k)}: {encode(v)}" for k, v in value.items()),
                    f'"{name}": "again"',
                ]
            )
            + "}"
        )
    elif kind == "surrogate":
        text = '{{"{}": "a\\{}"}}'.format(
            name,
            draw(st.sampled_from(["ud800", "udfff", "ud800\\u0041", "u0000"])),
        )
    elif kind == "nul":
        text = f'{{"{name}": "a\\u0000b"}}'
    elif kind == "deep":
        depth = draw(st.integers(100, 3000))
        text = '{{"{}": {}}}'.format(name, "[" * depth + "]" * depth)
    elif kind == "latin1":
        return '{"%s": "caf\u00e9 \u00ff"}'.encode("latin-1") % name.encode()
    elif kind == "truncate" and text:
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif kind == "big":
        text = '{{"{}": "{}"}}'.format(
            name, "y" * draw(st.integers(MAX_BODY - 100, MAX_BODY + 5000))
        )
    elif kind == "array":
        text = "[" + ",".join(["1"] * draw(st.integers(0, 8000))) + "]"
    return text.encode()


content_types = st.sampled_from(
    ["application/json"] * 6
    + ["application/json; charset=utf-8", "APPLICATION/JSON", "text/plain", "", None]
    + ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx"]
)

OBJECT_FIELDS = {"email": emails, "phone_number": phones}
VALID_OBJECT = st.fixed_dictionaries(
    {
        "email": st.sampled_from(["bob@example.com", "Bob@EXAMPLE.COM", "ünï@exämple.com"])
        | st.from_regex(r"[a-z0-9.'+_-]{1,30}@example\.com", fullmatch=True),
        "phone_number": st.sampled_from(["212-555-1234", "+44 20 7946 0958", "(718) 555 1234"]),
    }
)
VALID_ALERT = st.fixed_dictionaries(
    {"text": st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1)},
    optional={"object_ids": st.lists(st.integers(1, 5)), "alert_all": st.booleans()},
)
ALERT_FIELDS = {
    "text": nasty_text | long_text,
    "object_ids": ids | st.none(),
    "alert_all": st.booleans(),
}


# -- checks -----------------------------------------------------------------------------------


def check_response(response: requests.Response) -> Any:
    assert response.status_code in DOCUMENTED, (response.status_code, response.text[:500])
    event(f"status {response.status_code}")
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    if response.status_code != 200:
        assert isinstance(body["error"], str), body
        assert isinstance(body["message"], str), body
        assert set(body) <= {"error", "message", "fields"}, body
    return body


def post(
    http: requests.Session, url: str, raw: bytes, content_type: str | None, chunked: bool
) -> requests.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    data: Any = iter([raw[i : i + 4096] for i in range(0, len(raw), 4096)]) if chunked else raw
    return http.post(url, data=data, headers=headers, timeout=30)


@given(
    raw=raw_bodies(OBJECT_FIELDS, VALID_OBJECT), content_type=content_types, chunked=st.booleans()
)
def test_post_object_never_fails_badly(
    api: LiveServer,
    http: requests.Session,
    sync_db: psycopg.Connection[Any],
    raw: bytes,
    content_type: str | None,
    chunked: bool,
) -> None:
    before = counts(sync_db)
    response = post(http, api.url + "/object", raw, content_type, chunked)
    body = check_response(response)
    after = counts(sync_db)
    if response.status_code == 200:
        assert after == (before[0] + 1, before[1], before[2])
        row = sync_db.execute(
            "SELECT email, phone_number FROM objects WHERE id = %s", (body["id"],)
        ).fetchone()
        assert row == (body["email"], body["phone_number"])
    else:
        assert after == before, "a refused object was stored"


@given(raw=raw_bodies(ALERT_FIELDS, VALID_ALERT), content_type=content_types, chunked=st.booleans())
def test_post_alert_never_fails_badly(
    api: LiveServer,
    http: requests.Session,
    sync_db: psycopg.Connection[Any],
    raw: bytes,
    content_type: str | None,
    chunked: bool,
) -> None:
    if counts(sync_db)[0] == 0:
        sync_db.execute(
            "INSERT INTO objects (email, phone_number) VALUES ('a@example.com', '+12125551234'),"
            " ('b@example.com', '+12125551235')"
        )
    before = counts(sync_db)
    response = post(http, api.url + "/alert", raw, content_type, chunked)
    body = check_response(response)
    after = counts(sync_db)
    if response.status_code == 200:
        assert after[:2] == (before[0], before[1] + 1)
        assert after[2] - before[2] == body["number_of_objects_receiving_alert"]
        text = sync_db.execute("SELECT text FROM alerts WHERE id = %s", (body["id"],)).fetchone()
        assert text == (body["text"],)
    else:
        assert after == before, "a refused alert was stored"


# "." and ".." are not ids but path navigation: clients resolve /object/.. to / (the console).
path_segments = (
    nasty_text
    | huge_int.map(str)
    | st.floats().map(lambda f: "nan" if math.isnan(f) else repr(f))
    | st.sampled_from(["", " 1", "1 ", "+1", "0x10", "1e3", "١", "１", "%00", "...", "1/2", "-0"])
).filter(lambda segment: segment not in {".", ".."})


@given(segment=path_segments, route=st.sampled_from(["object", "alert", "inbox"]))
def test_path_ids_that_are_not_ids(
    api: LiveServer, http: requests.Session, segment: str, route: str
) -> None:
    response = http.get(f"{api.url}/{route}/{quote(segment, safe='')}", timeout=30)
    check_response(response)
    assert response.status_code in {400, 404}


# -- regressions found by the properties above -------------------------------------------------


async def test_an_oversized_list_of_junk_is_refused_cheaply(make_client: Any) -> None:
    """A 1 MB list of bad ids once cost a second of event-loop time and an 8 MB error body."""
    client = await make_client()
    body = {"text": "x", "object_ids": ["x"] * 200_000}
    response = await client.post("/alert", json=body)
    assert response.status == 422
    raw = await response.read()
    assert len(raw) < 1000, len(raw)
    assert "object_ids" in (await response.json())["fields"]


async def test_item_errors_are_capped(make_client: Any) -> None:
    client = await make_client(ALERT_MAX_OBJECT_IDS="500")
    response = await client.post("/alert", json={"text": "x", "object_ids": [-1] * 500})
    assert response.status == 422
    errors = (await response.json())["fields"]["object_ids"]
    assert len(errors) == 20


# Bytes an HTTP parser accepts in a header value (HTAB, visible ASCII, obs-text). Control
# characters are refused by aiohttp's parser before the app sees the request: the server
# answers those in JSON itself (tests/test_unparsed.py).
header_bytes = st.binary(max_size=300).map(
    lambda raw: bytes(c for c in raw if c == 9 or 32 <= c != 127).lstrip(b" \t")
)


@pytest.fixture
def locked_api(database_url: str) -> Iterator[LiveServer]:
    config = make_config(
        database_url, API_KEYS="good-key", INBOX_SECRET="fuzz-secret-0123456789abcdef012345"
    )
    with live_server(config, database_url) as server:
        yield server


@given(
    authorization=st.just(b"good-key") | header_bytes | st.none(),
    key=header_bytes | st.none(),
    route=st.sampled_from(["object", "alert"]),
)
def test_auth_and_idempotency_headers_never_fail_badly(
    locked_api: LiveServer,
    http: requests.Session,
    sync_db: psycopg.Connection[Any],
    authorization: bytes | None,
    key: bytes | None,
    route: str,
) -> None:
    headers: dict[str, bytes] = {}
    if authorization is not None:
        headers["Authorization"] = b"Bearer " + authorization
    if key is not None:
        headers["Idempotency-Key"] = key
    body = (
        {"email": "bob@example.com", "phone_number": "212-555-1234"}
        if route == "object"
        else {"text": "x", "alert_all": True}
    )
    before = counts(sync_db)
    response = http.post(f"{locked_api.url}/{route}", json=body, headers=headers, timeout=30)
    check_response(response)
    after = counts(sync_db)
    if response.status_code == 200:
        assert authorization == b"good-key"
        # One new object or alert, or none when the key was used before (a replay).
        assert (after[0] - before[0]) + (after[1] - before[1]) in {0, 1}
        if response.headers.get("Idempotent-Replayed") == "true":
            assert after == before
    else:
        assert response.status_code in {400, 401, 403, 422}, response.text
        assert after == before
