"""Drives a running Meshlite node with the real Python `supabase` client (PostgREST dialect of
issue 9). Usage: python supabase_slice.py http://127.0.0.1:PORT

Asserts every answer itself; exits non-zero naming the failing step on the first mismatch, and
prints one JSON summary line on success for the Rust test (node/tests/supabase_py.rs) to check.
The node serves the `todos` schema of that test (integer key; text, integer, boolean,
counter, timestamp and json columns).
"""

import json
import sys
import traceback

from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

URL = sys.argv[1]
# A dummy anon key (JWT-shaped, as the client expects): the node ignores it in this slice.
KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJl"
client = create_client(URL, KEY, ClientOptions(auto_refresh_token=False, persist_session=False))
steps = []


def todos():
    return client.table("todos")


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


def ids(query):
    return [row["id"] for row in query.execute().data]


@step("insert one and many (one transaction), returning the rows")
def _():
    r = todos().insert({"id": 1, "title": "buy milk", "qty": 2, "done": False}).execute()
    assert r.data == [
        {"id": 1, "title": "buy milk", "qty": 2, "done": False,
         "hits": None, "due": None, "tags": None}
    ], r.data
    r = todos().insert([
        {"id": 2, "title": "walk dog", "qty": 1, "done": True, "due": "2024-05-01T10:00:00Z"},
        {"id": 3, "title": "Buy bread", "qty": 5, "hits": 3},
        {"id": 4, "title": "fix bike, again", "qty": None, "done": False, "tags": ["a", "b"]},
        {"id": 5, "title": "call mom", "qty": 3, "done": True, "due": "2024-05-01T12:00:00+03:00"},
    ]).execute()
    assert [t["id"] for t in r.data] == [2, 3, 4, 5], r.data


@step("plain insert of an existing id is 23505 and writes nothing")
def _():
    fails(todos().insert([{"id": 6, "title": "new"}, {"id": 1, "title": "dup"}]), "23505")
    assert todos().select("id").eq("id", 6).execute().data == []


@step("select * returns every declared column, keys keep their JSON types")
def _():
    r = todos().select("*").eq("id", 4).single().execute()
    assert r.data == {"id": 4, "title": "fix bike, again", "qty": None, "done": False,
                      "hits": None, "due": None, "tags": ["a", "b"]}, r.data


@step("filters: eq neq gt gte lt lte like ilike in is not")
def _():
    assert ids(todos().select("id").gt("qty", 2)) == [3, 5]
    assert ids(todos().select("id").gte("qty", 2)) == [1, 3, 5]
    assert ids(todos().select("id").lt("qty", 2)) == [2]
    assert ids(todos().select("id").lte("qty", 2)) == [1, 2]
    assert ids(todos().select("id").neq("qty", 2)) == [2, 3, 5]
    assert ids(todos().select("id").eq("done", True)) == [2, 5]
    assert ids(todos().select("id").like("title", "buy%")) == [1]
    assert ids(todos().select("id").ilike("title", "buy%")) == [1, 3]
    assert ids(todos().select("id").in_("title", ["walk dog", "fix bike, again"])) == [2, 4]
    assert ids(todos().select("id").is_("qty", None)) == [4]
    assert ids(todos().select("id").is_("done", None)) == [3]
    assert ids(todos().select("id").not_.ilike("title", "%buy%")) == [2, 4, 5]
    assert ids(todos().select("id").not_.is_("qty", None).lt("qty", 3)) == [1, 2]
    # 12:00+03:00 is 09:00Z: before 09:30Z; 10:00Z is not.
    assert ids(todos().select("id").lt("due", "2024-05-01T09:30:00Z")) == [5]


@step("order on several columns with nulls, alias, limit")
def _():
    r = (todos().select("id, label:title")
         .order("done", desc=True, nullsfirst=False).order("qty").execute())
    assert [t["id"] for t in r.data] == [2, 5, 1, 4, 3], r.data
    assert r.data[0]["label"] == "walk dog"
    assert ids(todos().select("id").order("qty", desc=True)) == [4, 3, 5, 1, 2]
    assert ids(todos().select("id").order("id").limit(2)) == [1, 2]


@step("count=exact with range; head count")
def _():
    r = todos().select("id", count="exact").order("id").range(1, 2).execute()
    assert r.count == 5, r.count
    assert [t["id"] for t in r.data] == [2, 3]
    r = todos().select("*", count="exact").eq("done", True).execute()
    assert r.count == 2 and len(r.data) == 2
    r = todos().select("*", count="planned", head=True).eq("done", False).execute()
    assert r.count == 2, r.count


@step("single: one row is an object, none or many is PGRST116; maybe_single")
def _():
    r = todos().select("title").eq("id", 3).single().execute()
    assert r.data == {"title": "Buy bread"}, r.data
    e = fails(todos().select("*").eq("id", 99).single(), "PGRST116")
    assert e.details == "The result contains 0 rows", e.details
    fails(todos().select("*").single(), "PGRST116")
    assert todos().select("*").eq("id", 99).maybe_single().execute() is None


@step("update with filters; a counter set to a value applies the difference")
def _():
    r = todos().update({"done": True, "hits": 10}).eq("id", 3).execute()
    assert len(r.data) == 1 and r.data[0]["done"] is True and r.data[0]["hits"] == 10, r.data
    r = todos().update({"qty": 7}).in_("id", [1, 2]).execute()
    assert sorted(t["id"] for t in r.data) == [1, 2], r.data
    after = todos().select("id, qty").in_("id", [1, 2]).order("id").execute().data
    assert after == [{"id": 1, "qty": 7}, {"id": 2, "qty": 7}], after
    assert todos().update({"qty": 1}).eq("id", 99).execute().data == []


@step("upsert merges into existing rows and inserts new ones; ignore_duplicates")
def _():
    todos().upsert([{"id": 1, "title": "buy oat milk"},
                    {"id": 7, "title": "new via upsert", "qty": 1}]).execute()
    one = todos().select("*").eq("id", 1).single().execute().data
    # A list is sent with columns= (the union of its keys): a listed column an object lacks
    # is written null, as PostgREST's ON CONFLICT DO UPDATE does; one object keeps the rest.
    assert one["title"] == "buy oat milk" and one["qty"] is None, one
    todos().upsert({"id": 1, "qty": 7}).execute()
    one = todos().select("title, qty").eq("id", 1).single().execute().data
    assert one == {"title": "buy oat milk", "qty": 7}, one
    todos().upsert({"id": 7, "title": "ignored"}, ignore_duplicates=True).execute()
    seven = todos().select("title").eq("id", 7).single().execute().data
    assert seven == {"title": "new via upsert"}, seven


@step("delete with filters; insert after delete re-creates")
def _():
    r = todos().delete().eq("done", True).execute()
    assert sorted(t["id"] for t in r.data) == [2, 3, 5], r.data
    assert ids(todos().select("id").order("id")) == [1, 4, 7]
    todos().insert({"id": 2, "title": "walk dog again"}).execute()
    again = todos().select("id, title, done").eq("id", 2).single().execute().data
    assert again == {"id": 2, "title": "walk dog again", "done": None}, again
    todos().delete().eq("id", 2).execute()
    assert ids(todos().select("id").order("id")) == [1, 4, 7]


@step("errors in PostgREST's shape: unknown column, bad filter, wrong type, unknown table")
def _():
    e = fails(todos().select("nope"), "42703")
    assert "nope" in e.message, e.message
    fails(todos().insert({"id": 50, "nope": 1}), "PGRST204")
    fails(client.table("nope").select("*"), "PGRST205")
    fails(todos().select("*").filter("qty", "wat", "1"), "PGRST100")
    fails(todos().select("*").eq("qty", "many"), "22P02")
    fails(todos().insert({"id": 51, "qty": "many"}), "22P02")
    assert ids(todos().select("id").in_("id", [50, 51])) == [], "a refused write writes nothing"


print(json.dumps({"ok": True, "steps": steps}))
