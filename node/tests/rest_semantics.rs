//! REST semantics over real HTTP in one process (auth on, JWTs signed with the secret): the
//! `rpc` functions, `Prefer: missing=default` and `return=headers-only`, `on_conflict=` on
//! other columns, the 23505 of racing plain inserts (exactly one winner), and embedded
//! collections read under their own access rules. Every refused request writes nothing.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod inproc;
mod rest_client;

use std::net::SocketAddr;

use hyper::{Method, StatusCode};
use meshlite_core::schema::Schema;
use meshlite_node::auth::{Auth, Role};
use rest_client::{Answer, Client, role_key, user_key};
use serde_json::{Value, json};

const SECRET: &str = "rest-semantics-test-secret-with-32-characters";

const SCHEMA: &str = r#"
version = 1
strict = true

[collections.counters]
[collections.counters.fields]
n = { merge = "counter", type = "integer" }
label = { type = "text" }

[collections.mine]
[collections.mine.fields]
n = { merge = "counter", type = "integer" }
user_id = { type = "text" }
[collections.mine.access]
owner_field = "user_id"

[collections.tasks]
key_type = "integer"
[collections.tasks.fields]
title = { type = "text" }
status = { type = "text", default = "open" }
prio = { type = "integer", default = 3 }

[collections.events]
kind = "log"
[collections.events.fields]
what = { type = "text" }

[collections.users]
[collections.users.fields]
name = { type = "text" }
[collections.users.access]
anon = "read"

[collections.posts]
[collections.posts.fields]
author_id = { type = "text", references = "users" }
title = { type = "text" }
user_id = { type = "text" }
[collections.posts.access]
anon = "read"
owner_field = "user_id"

[collections.secrets]
[collections.secrets.fields]
user_ref = { type = "text", references = "users" }
body = { type = "text" }
"#;

impl Client {
    async fn send(&self, method: Method, path: &str, prefer: &str, body: Option<Value>) -> Answer {
        self.request(method, path, &[("prefer", prefer)], body)
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, "", None).await
    }

    async fn post(&self, path: &str, prefer: &str, body: Value) -> Answer {
        self.send(Method::POST, path, prefer, Some(body)).await
    }

    /// Posts `body`, which must be created (201).
    async fn created(&self, path: &str, prefer: &str, body: Value) -> Answer {
        let a = self.post(path, prefer, body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{path}: {}", a.body);
        a
    }

    /// The rows of `path`, which must answer 200.
    async fn rows(&self, path: &str) -> Value {
        let a = self.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        a.body
    }
}

struct Setup {
    _server: inproc::Server,
    addr: SocketAddr,
}

impl Setup {
    async fn new() -> Self {
        let schema = Schema::from_toml(SCHEMA).unwrap();
        let server = inproc::serve_with(Some(schema), "sem", Auth::with_secret(SECRET)).await;
        Self {
            addr: server.addr,
            _server: server,
        }
    }

    fn service(&self) -> Client {
        Client {
            addr: self.addr,
            key: None,
        }
    }

    fn anon(&self) -> Client {
        Client {
            addr: self.addr,
            key: Some(role_key(SECRET, Role::Anon)),
        }
    }

    fn user(&self, sub: &str) -> Client {
        Client {
            addr: self.addr,
            key: Some(user_key(SECRET, sub)),
        }
    }
}

/// `a` is PostgREST's error `code` with `status`, in its JSON shape.
fn assert_error(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["code"], code, "{}", a.body);
    for k in ["message", "details", "hint"] {
        assert!(a.body.get(k).is_some(), "no {k} in {}", a.body);
    }
}

#[tokio::test]
async fn rpc_increment_adds_to_a_counter_and_returns_the_new_value() {
    let s = Setup::new().await;
    let c = s.service();
    c.created("/rest/v1/counters", "", json!({"id": "a", "n": 5}))
        .await;
    let call = |args: Value| {
        let c = c.clone();
        async move { c.post("/rest/v1/rpc/increment", "", args).await }
    };
    let a = call(json!({"table": "counters", "id": "a", "column": "n", "by": 3})).await;
    assert_eq!((a.status, &a.body), (StatusCode::OK, &json!(8)));
    let a = call(json!({"table": "counters", "id": "a", "column": "n"})).await;
    assert_eq!(a.body, json!(9), "by defaults to 1");
    let a = call(json!({"table": "counters", "id": "a", "column": "n", "by": -10})).await;
    assert_eq!(a.body, json!(-1));
    // No such row: null, and nothing is created.
    let a = call(json!({"table": "counters", "id": "zz", "column": "n"})).await;
    assert_eq!((a.status, &a.body), (StatusCode::OK, &Value::Null));
    assert_eq!(
        c.rows("/rest/v1/counters?select=id,n").await,
        json!([{"id": "a", "n": -1}])
    );
}

#[tokio::test]
async fn rpc_refusals_are_postgrest_shaped_and_write_nothing() {
    let s = Setup::new().await;
    let c = s.service();
    c.created(
        "/rest/v1/counters",
        "",
        json!({"id": "a", "n": 1, "label": "x"}),
    )
    .await;
    let doc = c.get("/rest/v1/").await.body;
    let args = &doc["paths"]["/rpc/increment"]["post"]["parameters"][0]["schema"];
    assert_eq!(args["required"], json!(["column", "id", "table"]), "{doc}");
    assert_eq!(args["properties"]["by"]["format"], "bigint");
    let a = c.post("/rest/v1/rpc/nope", "", json!({"x": 1})).await;
    assert_error(&a, StatusCode::NOT_FOUND, "PGRST202");
    assert_eq!(
        a.body["message"],
        "Could not find the function public.nope(x) in the schema cache"
    );
    let a = c.post("/rest/v1/rpc/nope", "", json!({})).await;
    assert_eq!(
        a.body["message"],
        "Could not find the function public.nope without parameters in the schema cache"
    );
    let bad_args = json!({"table": "counters", "id": "a", "column": "n", "amount": 2});
    let a = c.post("/rest/v1/rpc/increment", "", bad_args).await;
    assert_error(&a, StatusCode::NOT_FOUND, "PGRST202");
    assert_eq!(
        a.body["details"],
        "Searched for the function public.increment with parameters amount, column, id, table or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache."
    );
    let cases = [
        (
            json!({"table": "counters", "id": "a", "column": "label"}),
            StatusCode::BAD_REQUEST,
            "22023",
        ),
        (
            json!({"table": "counters", "id": "a", "column": "zz"}),
            StatusCode::BAD_REQUEST,
            "PGRST204",
        ),
        (
            json!({"table": "counters", "id": "a", "column": "n", "by": 1.5}),
            StatusCode::BAD_REQUEST,
            "22P02",
        ),
        (
            json!({"table": "nope", "id": "a", "column": "n"}),
            StatusCode::NOT_FOUND,
            "PGRST205",
        ),
        (
            json!({"table": "events", "id": "a", "column": "what"}),
            StatusCode::METHOD_NOT_ALLOWED,
            "42809",
        ),
    ];
    for (args, status, code) in cases {
        let a = c.post("/rest/v1/rpc/increment", "", args.clone()).await;
        assert_eq!(
            (a.status, &a.body["code"]),
            (status, &json!(code)),
            "{args}"
        );
        assert_error(&a, status, code);
    }
    let a = c
        .get("/rest/v1/rpc/increment?table=counters&id=a&column=n")
        .await;
    assert_error(&a, StatusCode::METHOD_NOT_ALLOWED, "25006");
    let a = c
        .send(Method::POST, "/rest/v1/rpc/increment", "", None)
        .await;
    assert_error(&a, StatusCode::NOT_FOUND, "PGRST202");
    let args = json!({"table": "counters", "id": "a", "column": "n"});
    let a = s.anon().post("/rest/v1/rpc/increment", "", args).await;
    assert_error(&a, StatusCode::FORBIDDEN, "42501");
    assert_eq!(
        c.rows("/rest/v1/counters").await,
        json!([{"id": "a", "n": 1, "label": "x"}])
    );
}

#[tokio::test]
async fn rpc_increment_sees_only_the_callers_rows_under_the_owner_rule() {
    let s = Setup::new().await;
    let (u1, u2) = (s.user("u1"), s.user("u2"));
    u1.created("/rest/v1/mine", "", json!({"id": "m", "n": 1}))
        .await;
    let args = json!({"table": "mine", "id": "m", "column": "n", "by": 5});
    let a = u2.post("/rest/v1/rpc/increment", "", args.clone()).await;
    assert_eq!((a.status, &a.body), (StatusCode::OK, &Value::Null));
    let a = u1.post("/rest/v1/rpc/increment", "", args).await;
    assert_eq!(a.body, json!(6));
}

#[tokio::test]
async fn columns_with_missing_default_take_declared_defaults_else_null() {
    let s = Setup::new().await;
    let c = s.service();
    let body = json!([{"id": 1, "title": "a"}, {"id": 2, "title": "b", "status": "done"}]);
    let cols = "/rest/v1/tasks?columns=id,title,status,prio";
    c.created(cols, "missing=default", body).await;
    c.created(cols, "", json!({"id": 3, "title": "c"})).await;
    // Not listed in columns=: the declared default, as Postgres fills unlisted columns.
    c.created(
        "/rest/v1/tasks?columns=id",
        "",
        json!({"id": 4, "title": "ignored"}),
    )
    .await;
    assert_eq!(
        c.rows("/rest/v1/tasks?order=id").await,
        json!([
            {"id": 1, "title": "a", "status": "open", "prio": 3},
            {"id": 2, "title": "b", "status": "done", "prio": 3},
            {"id": 3, "title": "c", "status": null, "prio": null},
            {"id": 4, "title": null, "status": "open", "prio": 3},
        ])
    );
    // A listed key an object lacks is a null primary key without missing=default.
    let a = c
        .post(cols, "", json!([{"id": 5}, {"title": "no id"}]))
        .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "23502");
    // Without columns=, an array's objects must have the same keys (PGRST102).
    let a = c
        .post(
            "/rest/v1/tasks",
            "",
            json!([{"id": 6}, {"id": 7, "title": "t"}]),
        )
        .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "PGRST102");
    assert_eq!(a.body["details"], "All object keys must match");
    assert_eq!(
        c.rows("/rest/v1/tasks?select=id")
            .await
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn headers_only_answers_201_with_the_location_of_one_row() {
    let s = Setup::new().await;
    let c = s.service();
    let a = c
        .post(
            "/rest/v1/tasks",
            "return=headers-only",
            json!({"id": 7, "title": "x"}),
        )
        .await;
    assert_eq!((a.status, &a.body), (StatusCode::CREATED, &Value::Null));
    assert_eq!(a.headers["location"], "/tasks?id=eq.7");
    assert_eq!(a.headers["content-range"], "*/*");
    let a = c
        .post(
            "/rest/v1/counters",
            "return=headers-only",
            json!({"id": "a b&c"}),
        )
        .await;
    assert_eq!(a.headers["location"], "/counters?id=eq.a+b%26c");
    let two = json!([{"id": 8}, {"id": 9}]);
    let a = c.post("/rest/v1/tasks", "return=headers-only", two).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(a.headers.get("location").is_none(), "{:?}", a.headers);
    let a = c
        .send(
            Method::PATCH,
            "/rest/v1/tasks?id=eq.7",
            "return=headers-only",
            Some(json!({"title": "y"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn on_conflict_may_only_name_the_primary_key() {
    let s = Setup::new().await;
    let c = s.service();
    c.created("/rest/v1/tasks", "", json!({"id": 1, "title": "a"}))
        .await;
    let merge = "resolution=merge-duplicates";
    for spec in ["title", "id,title"] {
        let path = format!("/rest/v1/tasks?on_conflict={spec}");
        let a = c.post(&path, merge, json!({"id": 1, "title": "b"})).await;
        assert_error(&a, StatusCode::BAD_REQUEST, "42P10");
        assert_eq!(
            a.body["message"],
            "there is no unique or exclusion constraint matching the ON CONFLICT specification"
        );
    }
    let a = c
        .post(
            "/rest/v1/tasks?on_conflict=nope",
            merge,
            json!({"id": 1, "title": "b"}),
        )
        .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "42703");
    assert_eq!(
        c.rows("/rest/v1/tasks?select=title").await,
        json!([{"title": "a"}])
    );
    c.created(
        "/rest/v1/tasks?on_conflict=id",
        merge,
        json!({"id": 1, "title": "b"}),
    )
    .await;
    // Without a resolution there is no ON CONFLICT clause: on_conflict is ignored.
    c.created(
        "/rest/v1/tasks?on_conflict=title",
        "",
        json!({"id": 2, "title": "c"}),
    )
    .await;
    assert_eq!(
        c.rows("/rest/v1/tasks?select=title&order=id").await,
        json!([{"title": "b"}, {"title": "c"}])
    );
}

/// Concurrent POSTs of one id over HTTP.
async fn race(c: &Client, prefer: &'static str, n: usize) -> Vec<Answer> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.post(
                    "/rest/v1/tasks",
                    prefer,
                    json!({"id": 42, "title": format!("t{i}")}),
                )
                .await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_plain_inserts_of_one_id_have_exactly_one_winner() {
    let s = Setup::new().await;
    let c = s.service();
    let answers = race(&c, "", 32).await;
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1);
    for a in answers.iter().filter(|a| a.status != StatusCode::CREATED) {
        assert_error(a, StatusCode::CONFLICT, "23505");
        assert_eq!(a.body["details"], "Key (id)=(42) already exists.");
    }
    // ignore-duplicates: every request succeeds, the row is the first one's and is unchanged.
    let before = c.rows("/rest/v1/tasks").await;
    let answers = race(&c, "resolution=ignore-duplicates", 16).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::CREATED));
    assert_eq!(c.rows("/rest/v1/tasks").await, before);
}

#[tokio::test]
async fn embedded_collections_are_read_under_their_own_access_rules() {
    let s = Setup::new().await;
    let c = s.service();
    c.created(
        "/rest/v1/users",
        "",
        json!([{"id": "ann", "name": "Ann"}, {"id": "bob", "name": "Bob"}]),
    )
    .await;
    let posts = json!([
        {"id": "p1", "author_id": "ann", "title": "ann's", "user_id": "ann"},
        {"id": "p2", "author_id": "bob", "title": "bob's", "user_id": "bob"},
    ]);
    c.created("/rest/v1/posts", "", posts).await;
    c.created(
        "/rest/v1/secrets",
        "",
        json!({"id": "s1", "user_ref": "ann", "body": "psst"}),
    )
    .await;

    // anon may read users and posts, not secrets: embedding secrets is 42501.
    let anon = s.anon();
    let a = anon.get("/rest/v1/users?select=id,secrets(body)").await;
    assert_error(&a, StatusCode::FORBIDDEN, "42501");
    assert_eq!(a.body["message"], "permission denied for table secrets");
    let all = anon
        .rows("/rest/v1/users?select=id,posts(id)&order=id")
        .await;
    assert_eq!(
        all,
        json!([{"id": "ann", "posts": [{"id": "p1"}]}, {"id": "bob", "posts": [{"id": "p2"}]}])
    );

    // authenticated under posts' owner rule: only its own posts are embedded.
    let ann = s.user("ann");
    let mine = ann
        .rows("/rest/v1/users?select=id,posts(id)&order=id")
        .await;
    assert_eq!(
        mine,
        json!([{"id": "ann", "posts": [{"id": "p1"}]}, {"id": "bob", "posts": []}])
    );
    let inner = ann.rows("/rest/v1/users?select=id,posts!inner(id)").await;
    assert_eq!(inner, json!([{"id": "ann", "posts": [{"id": "p1"}]}]));
    let secrets = ann
        .rows("/rest/v1/users?select=id,secrets(body)&id=eq.ann")
        .await;
    assert_eq!(
        secrets,
        json!([{"id": "ann", "secrets": [{"body": "psst"}]}])
    );
}

/// `PATCH ?key=eq.X` alone is one store update with no read first (`rest::write::update_one`):
/// it answers what the general path answers, matches nothing (200, `[]`) for an absent or a
/// deleted key without creating or reviving it, and leaves other filters to the general path.
#[tokio::test]
async fn patch_by_key_updates_only_a_live_row() {
    let s = Setup::new().await;
    let c = s.service();
    let repr = "return=representation";
    c.created("/rest/v1/tasks", "", json!({"id": 1, "title": "a"}))
        .await;
    let by_key = |id: i64| format!("/rest/v1/tasks?id=eq.{id}");
    let a = c
        .send(Method::PATCH, &by_key(1), repr, Some(json!({"title": "b"})))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let want = json!([{"id": 1, "title": "b", "status": "open", "prio": 3}]);
    assert_eq!(a.body, want);
    // The same row through the general path (a second filter) answers alike.
    let a = c
        .send(
            Method::PATCH,
            "/rest/v1/tasks?id=eq.1&title=eq.b",
            repr,
            Some(json!({"title": "b"})),
        )
        .await;
    assert_eq!((a.status, &a.body), (StatusCode::OK, &want));

    let a = c
        .send(Method::PATCH, &by_key(2), repr, Some(json!({"title": "x"})))
        .await;
    assert_eq!((a.status, &a.body), (StatusCode::OK, &json!([])));
    assert_eq!(
        c.rows(&by_key(2)).await,
        json!([]),
        "an absent key is not created"
    );

    let a = c.send(Method::DELETE, &by_key(1), "", None).await;
    assert!(a.status.is_success(), "{}", a.body);
    let a = c
        .send(Method::PATCH, &by_key(1), repr, Some(json!({"title": "c"})))
        .await;
    assert_eq!((a.status, &a.body), (StatusCode::OK, &json!([])));
    assert_eq!(
        c.rows(&by_key(1)).await,
        json!([]),
        "a deleted key is not revived"
    );

    // Text keys, and a refused value: nothing written.
    c.created("/rest/v1/counters", "", json!({"id": "k", "label": "a"}))
        .await;
    let path = "/rest/v1/counters?id=eq.k";
    let a = c
        .send(Method::PATCH, path, repr, Some(json!({"label": "b"})))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body[0]["label"], "b");
    assert_eq!(
        a.body,
        c.rows(path).await,
        "the answer shows the row as read"
    );
    let a = c
        .send(Method::PATCH, path, repr, Some(json!({"label": 5})))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(c.rows(path).await[0]["label"], "b");
}
