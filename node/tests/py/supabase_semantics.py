"""Drives a running Meshlite node with the real Python `supabase` client: rpc functions,
`default_to_null=False` (Prefer: missing=default), `on_conflict` on a non-key column, and racing
plain inserts of one id. Usage: python supabase_semantics.py http://127.0.0.1:PORT

Asserts every answer itself; exits non-zero naming the failing step on the first mismatch, and
prints one JSON summary line on success for the Rust test (node/tests/supabase_py.rs) to check.
The node serves tests/js/semantics_schema.toml.
"""

import json
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor

from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

URL = sys.argv[1]
KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJl"
OPTIONS = ClientOptions(auto_refresh_token=False, persist_session=False)
client = create_client(URL, KEY, OPTIONS)
steps = []


def step(name):
    def run(f):
        try:
            f()
        except Exception:  # noqa: BLE001 - any failure is reported with its step
            print(f'step "{name}" failed:', file=sys.stderr)
            traceback.print_exc()
            sys.exit(1)
        steps.append(name)
        return f

    return run


def fails(query, code):
    """Runs `query` (a request builder); it must raise PostgREST's error `code`."""
    try:
        res = query.execute()
    except APIError as e:
        assert e.code == code, f"expected {code}, got {e.code}: {e.message}"
        return e
    raise AssertionError(f"expected error {code}, got {res}")


@step("rpc increment returns the new counter value")
def _():
    client.table("counters").insert({"id": "a", "n": 5}).execute()
    args = {"table": "counters", "id": "a", "column": "n", "by": 3}
    assert client.rpc("increment", args).execute().data == 8
    args.pop("by")
    assert client.rpc("increment", args).execute().data == 9
    rows = client.table("counters").select("id, n").execute().data
    assert rows == [{"id": "a", "n": 9}], rows


@step("rpc of an unknown function is PGRST202")
def _():
    e = fails(client.rpc("nope", {"x": 1}), "PGRST202")
    assert e.message == "Could not find the function public.nope(x) in the schema cache", e.message


@step("default_to_null=False sends missing=default: absent columns take defaults")
def _():
    rows = [{"id": 1, "title": "a"}, {"id": 2, "title": "b", "status": "done"}]
    client.table("tasks").insert(rows, default_to_null=False).execute()
    client.table("tasks").insert([{"id": 3, "title": "c"}, {"id": 4, "prio": 1}]).execute()
    got = client.table("tasks").select("*").order("id").execute().data
    assert got == [
        {"id": 1, "title": "a", "status": "open", "prio": 3},
        {"id": 2, "title": "b", "status": "done", "prio": 3},
        {"id": 3, "title": "c", "status": "open", "prio": None},
        {"id": 4, "title": None, "status": "open", "prio": 1},
    ], got


@step("upsert on a non-key column is 42P10 and writes nothing")
def _():
    fails(client.table("tasks").upsert({"id": 1, "title": "z"}, on_conflict="title"), "42P10")
    one = client.table("tasks").select("title").eq("id", 1).single().execute().data
    assert one == {"title": "a"}, one


@step("racing plain inserts of one id: exactly one succeeds, the rest 23505")
def _():
    def attempt(i):
        own = create_client(URL, KEY, OPTIONS)
        try:
            own.table("tasks").insert({"id": 100, "title": f"t{i}"}).execute()
            return "created"
        except APIError as e:
            return e.code

    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(attempt, range(12)))
    assert sorted(codes) == ["23505"] * 11 + ["created"], codes


print(json.dumps({"ok": True, "steps": steps}))
