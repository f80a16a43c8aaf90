//! Auth on `/rest/v1` and the native API over real HTTP in one process, with `JWT_SECRET` set:
//! keyless loopback requests are `service_role`; the `anon` key reads only where the schema
//! grants it and writes nowhere; `service_role` does everything; `authenticated` users see and
//! write only their own rows under the owner rule (someone else's rows match nothing, as
//! PostgREST over row-level security answers); expired, forged, `alg: none` and garbage tokens
//! get 401 in PostgREST's shape and write nothing.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod inproc;
mod rest_client;

use std::net::SocketAddr;

use hyper::{Method, StatusCode};
use meshlite_core::schema::Schema;
use meshlite_node::auth::jwt::{sign_claims, sign_key};
use meshlite_node::auth::{Auth, Role, unix_now};
use meshlite_node::httpc;
use rest_client::{Answer, Client, role_key, user_key};
use serde_json::{Value, json};

const SECRET: &str = "rest-auth-test-secret-with-32-characters-or-more";

const SCHEMA: &str = r#"
version = 1
strict = true

[collections.notes]
[collections.notes.fields]
body = { type = "text" }

[collections.posts]
[collections.posts.fields]
title = { type = "text" }
[collections.posts.access]
anon = "read"

[collections.todos]
[collections.todos.fields]
title = { type = "text" }
user_id = { type = "text" }
[collections.todos.access]
owner_field = "user_id"
"#;

impl Client {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let prefer = [("prefer", "return=representation")];
        self.request(method, path, &prefer, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }
}

struct Setup {
    _server: inproc::Server,
    addr: SocketAddr,
}

impl Setup {
    async fn new() -> Self {
        let schema = Schema::from_toml(SCHEMA).unwrap();
        let server = inproc::serve_with(Some(schema), "auth", Auth::with_secret(SECRET)).await;
        Self {
            addr: server.addr,
            _server: server,
        }
    }

    fn keyless(&self) -> Client {
        self.with(None)
    }

    fn with(&self, key: Option<String>) -> Client {
        Client {
            addr: self.addr,
            key,
        }
    }

    fn role(&self, role: Role) -> Client {
        self.with(Some(role_key(SECRET, role)))
    }

    fn user(&self, sub: &str) -> Client {
        self.with(Some(user_key(SECRET, sub)))
    }
}

fn ids(a: &Answer) -> Vec<String> {
    let mut ids: Vec<String> = a
        .body
        .as_array()
        .unwrap_or_else(|| panic!("{} {}", a.status, a.body))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn assert_denied(a: &Answer, table: &str) {
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(a.body["code"], "42501", "{}", a.body);
    assert_eq!(
        a.body["message"],
        format!("permission denied for table {table}")
    );
}

fn assert_row_policy(a: &Answer) {
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(a.body["code"], "42501", "{}", a.body);
    let m = a.body["message"].as_str().unwrap();
    assert!(m.contains("row-level security policy"), "{m}");
}

#[tokio::test]
async fn keyless_loopback_requests_are_service_role() {
    let s = Setup::new().await;
    let c = s.keyless();
    let a = c
        .post("/rest/v1/notes", json!({"id": "n1", "body": "hi"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(ids(&c.get("/rest/v1/notes").await), ["n1"]);
    assert_eq!(c.get("/v1/notes/n1").await.status, StatusCode::OK);
    assert_eq!(c.get("/status").await.status, StatusCode::OK);
}

#[tokio::test]
async fn anon_reads_where_granted_and_writes_nowhere() {
    let s = Setup::new().await;
    let admin = s.keyless();
    admin
        .post("/rest/v1/posts", json!({"id": "p1", "title": "t"}))
        .await;
    let anon = s.role(Role::Anon);
    assert_eq!(ids(&anon.get("/rest/v1/posts").await), ["p1"]);
    let a = anon.post("/rest/v1/posts", json!({"id": "p2"})).await;
    assert_denied(&a, "posts");
    let a = anon
        .send(
            Method::PATCH,
            "/rest/v1/posts?id=eq.p1",
            Some(json!({"title": "x"})),
        )
        .await;
    assert_denied(&a, "posts");
    assert_denied(
        &anon
            .send(Method::DELETE, "/rest/v1/posts?id=eq.p1", None)
            .await,
        "posts",
    );
    assert_denied(&anon.get("/rest/v1/notes").await, "notes");
    let native = anon.get("/v1/posts/p1").await;
    assert_eq!(native.status, StatusCode::FORBIDDEN, "{}", native.body);
    assert_eq!(native.body["code"], "42501");
    assert_eq!(anon.get("/status").await.status, StatusCode::FORBIDDEN);
    assert_eq!(anon.get("/healthz").await.status, StatusCode::OK);
    // Nothing changed.
    let rows = admin.get("/rest/v1/posts").await;
    assert_eq!(rows.body, json!([{"id": "p1", "title": "t"}]));
}

#[tokio::test]
async fn service_role_does_everything() {
    let s = Setup::new().await;
    let svc = s.role(Role::ServiceRole);
    for (id, owner) in [("a", "u1"), ("b", "u2")] {
        let a = svc
            .post("/rest/v1/todos", json!({"id": id, "user_id": owner}))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    assert_eq!(ids(&svc.get("/rest/v1/todos").await), ["a", "b"]);
    let a = svc
        .send(
            Method::PATCH,
            "/rest/v1/todos?id=eq.b",
            Some(json!({"user_id": "u3"})),
        )
        .await;
    assert_eq!(a.body[0]["user_id"], "u3", "{}", a.body);
    let a = svc
        .send(Method::DELETE, "/rest/v1/todos?id=eq.a", None)
        .await;
    assert_eq!(ids(&a), ["a"]);
    assert_eq!(svc.get("/v1/todos/b").await.status, StatusCode::OK);
    assert_eq!(svc.get("/metrics").await.status, StatusCode::OK);
}

#[tokio::test]
async fn authenticated_users_see_and_write_only_their_rows() {
    let s = Setup::new().await;
    let svc = s.keyless();
    for (id, owner) in [("a", "u1"), ("b", "u2"), ("c", "u1")] {
        svc.post(
            "/rest/v1/todos",
            json!({"id": id, "user_id": owner, "title": id}),
        )
        .await;
    }
    let u1 = s.user("u1");
    assert_eq!(ids(&u1.get("/rest/v1/todos").await), ["a", "c"]);
    assert_eq!(
        ids(&u1.get("/rest/v1/todos?id=eq.b").await),
        Vec::<String>::new()
    );
    // Someone else's row matches nothing: 200 with no rows, and it is unchanged.
    let a = u1
        .send(
            Method::PATCH,
            "/rest/v1/todos?id=eq.b",
            Some(json!({"title": "mine"})),
        )
        .await;
    assert_eq!((a.status, a.body.clone()), (StatusCode::OK, json!([])));
    let a = u1.send(Method::DELETE, "/rest/v1/todos", None).await;
    assert_eq!(
        ids(&a),
        ["a", "c"],
        "a delete without filters removes only own rows"
    );
    assert_eq!(ids(&svc.get("/rest/v1/todos").await), ["b"]);
    assert_eq!(
        svc.get("/rest/v1/todos?id=eq.b").await.body[0]["title"],
        "b"
    );
    // Inserts are stamped with the caller; another owner is refused.
    let a = u1
        .post("/rest/v1/todos", json!({"id": "d", "title": "new"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body[0]["user_id"], "u1");
    assert_row_policy(
        &u1.post("/rest/v1/todos", json!({"id": "e", "user_id": "u2"}))
            .await,
    );
    // A patch may not give a row away; an upsert may not take one over.
    let a = u1
        .send(
            Method::PATCH,
            "/rest/v1/todos?id=eq.d",
            Some(json!({"user_id": "u2"})),
        )
        .await;
    assert_row_policy(&a);
    let merge = [
        (
            "prefer",
            "resolution=merge-duplicates,return=representation",
        ),
        ("apikey", u1.key.as_deref().unwrap()),
    ];
    let bearer = format!("Bearer {}", u1.key.as_deref().unwrap());
    let mut headers = merge.to_vec();
    headers.push(("authorization", bearer.as_str()));
    let body = json!({"id": "b", "title": "taken"})
        .to_string()
        .into_bytes();
    let (status, _, bytes) =
        httpc::request_with(s.addr, Method::POST, "/rest/v1/todos", &headers, Some(body))
            .await
            .unwrap()
            .into_parts();
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    // Nothing of the refused writes landed.
    let all = svc.get("/rest/v1/todos?order=id").await.body;
    assert_eq!(
        all,
        json!([
            {"id": "b", "title": "b", "user_id": "u2"},
            {"id": "d", "title": "new", "user_id": "u1"},
        ])
    );
    // A user without the owner rule's table sees everything the default grant allows.
    let a = u1
        .post("/rest/v1/notes", json!({"id": "n", "body": "x"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
}

#[tokio::test]
async fn bad_tokens_get_401_in_postgrest_shape_and_write_nothing() {
    let s = Setup::new().await;
    let now = unix_now();
    let expired = sign_key(SECRET, Role::ServiceRole, now - 7200, 3600).unwrap();
    let other = "another-secret-that-is-also-32-characters-long";
    let forged = sign_key(other, Role::ServiceRole, now, 3600).unwrap();
    let b64 = |v: Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"role": "service_role"}))
    );
    let odd_role = sign_claims(SECRET, &json!({"role": "postgres"})).unwrap();
    for (token, code, message) in [
        (expired, "PGRST303", "JWT expired"),
        (forged, "PGRST301", "JWT cryptographic operation failed"),
        (none, "PGRST301", "Wrong or unsupported encoding algorithm"),
        (
            "garbage".into(),
            "PGRST301",
            "Expected 3 parts in JWT; got 1",
        ),
        (odd_role, "22023", "role \"postgres\" does not exist"),
    ] {
        let c = s.with(Some(token.clone()));
        for a in [
            c.get("/rest/v1/notes").await,
            c.post("/rest/v1/notes", json!({"id": "x"})).await,
            c.get("/v1/notes").await,
        ] {
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{token}: {}", a.body);
            assert_eq!(a.body["code"], code, "{token}: {}", a.body);
            assert_eq!(a.body["message"], message, "{token}: {}", a.body);
            for key in ["details", "hint"] {
                assert!(a.body.get(key).is_some(), "{}", a.body);
            }
            if code != "22023" {
                let www = a.headers["www-authenticate"].to_str().unwrap();
                assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
            }
        }
    }
    let empty = httpc::request_with(
        s.addr,
        Method::GET,
        "/rest/v1/notes",
        &[("authorization", "Bearer ")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(empty.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        ids(&s.keyless().get("/rest/v1/notes").await),
        Vec::<String>::new()
    );
}
