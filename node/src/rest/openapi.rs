//! `GET /rest/v1/`: the OpenAPI (Swagger 2.0) description PostgREST serves at its root, built
//! from the schema: a path per declared collection (`get`, `post`, and for documents `patch`
//! and `delete`), a definition per collection with its columns (types as PostgREST maps the
//! Postgres type each declared field type stands for; untyped fields as `jsonb`, which
//! Swagger leaves untyped), the primary key and `references` noted as PostgREST notes them,
//! the shared parameters, and the `rpc` functions (`/rpc/increment`). Undeclared collections of a non-strict schema are not listed.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use meshlite_core::schema::{CollectionDef, CollectionKind, FieldDef, FieldType, Schema};
use serde_json::{Map, Value, json};

use super::error::pg_type;
use super::rpc::Function;
use crate::state::AppState;

/// The handler.
pub async fn describe(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let doc = document(&s.store.schema(), host);
    let mut r = axum::Json(doc).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openapi+json; charset=utf-8"),
    );
    r
}

const MEDIA: [&str; 4] = [
    "application/json",
    "application/vnd.pgrst.object+json;nulls=stripped",
    "application/vnd.pgrst.object+json",
    "text/csv",
];

/// The whole document.
pub fn document(schema: &Schema, host: &str) -> Value {
    let mut paths = Map::new();
    paths.insert(
        "/".into(),
        json!({"get": {
            "produces": ["application/openapi+json", "application/json"],
            "responses": {"200": {"description": "OK"}},
            "summary": "OpenAPI description (this document)",
            "tags": ["Introspection"],
        }}),
    );
    for f in Function::ALL {
        paths.insert(format!("/rpc/{}", f.name()), f.path_item());
    }
    let mut definitions = Map::new();
    let mut parameters = shared_parameters();
    for (name, def) in &schema.collections {
        paths.insert(format!("/{name}"), path_item(name, def));
        definitions.insert(name.clone(), definition(schema, def));
        parameters.insert(
            format!("body.{name}"),
            json!({"name": name, "description": name, "required": false, "in": "body",
                   "schema": {"$ref": format!("#/definitions/{name}")}}),
        );
        for (column, format) in columns(def) {
            parameters.insert(
                format!("rowFilter.{name}.{column}"),
                json!({"name": column, "required": false, "format": format, "in": "query", "type": "string"}),
            );
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"description": "", "title": "standard public schema", "version": env!("CARGO_PKG_VERSION")},
        "host": host,
        "basePath": "/rest/v1",
        "schemes": ["http"],
        "consumes": MEDIA,
        "produces": MEDIA,
        "paths": paths,
        "definitions": definitions,
        "parameters": parameters,
        "externalDocs": {"description": "PostgREST Documentation", "url": "https://postgrest.org/en/v12/references/api.html"},
    })
}

/// (column, Postgres type name) in table order: the key, then the declared fields.
fn columns(def: &CollectionDef) -> Vec<(String, &'static str)> {
    let key = def.key_type.map_or("text", pg_type);
    let fields = def
        .fields
        .iter()
        .map(|(f, d)| (f.clone(), d.field_type.map_or("jsonb", pg_type)));
    std::iter::once((def.primary_key.clone(), key))
        .chain(fields)
        .collect()
}

fn refs(items: &[String]) -> Vec<Value> {
    items
        .iter()
        .map(|p| json!({"$ref": format!("#/parameters/{p}")}))
        .collect()
}

fn path_item(name: &str, def: &CollectionDef) -> Value {
    let filters: Vec<String> = columns(def)
        .into_iter()
        .map(|(c, _)| format!("rowFilter.{name}.{c}"))
        .collect();
    let with = |extra: &[&str]| {
        let mut v = filters.clone();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        refs(&v)
    };
    let tags = json!([name]);
    let mut item = Map::new();
    item.insert("get".into(), json!({
        "parameters": with(&["select", "order", "range", "rangeUnit", "offset", "limit", "preferCount"]),
        "responses": {
            "200": {"description": "OK", "schema": {"items": {"$ref": format!("#/definitions/{name}")}, "type": "array"}},
            "206": {"description": "Partial Content"},
        },
        "tags": tags,
    }));
    let body = format!("body.{name}");
    item.insert(
        "post".into(),
        json!({
            "parameters": refs(&[body.clone(), "select".into(), "preferPost".into()]),
            "responses": {"201": {"description": "Created"}},
            "tags": tags,
        }),
    );
    if def.kind == CollectionKind::Document {
        item.insert(
            "delete".into(),
            json!({
                "parameters": with(&["preferReturn"]),
                "responses": {"204": {"description": "No Content"}},
                "tags": tags,
            }),
        );
        item.insert(
            "patch".into(),
            json!({
                "parameters": with(&[body.as_str(), "preferReturn"]),
                "responses": {"204": {"description": "No Content"}},
                "tags": tags,
            }),
        );
    }
    Value::Object(item)
}

/// Swagger's type for a Postgres type (none for JSON: any value).
fn swagger_type(ty: Option<FieldType>) -> Option<&'static str> {
    match ty {
        Some(FieldType::Text | FieldType::Timestamp | FieldType::Uuid) => Some("string"),
        Some(FieldType::Integer) => Some("integer"),
        Some(FieldType::Float) => Some("number"),
        Some(FieldType::Boolean) => Some("boolean"),
        Some(FieldType::Json) | None => None,
    }
}

fn property(ty: Option<FieldType>, format: &str, description: Option<String>) -> Value {
    let mut p = Map::new();
    if let Some(d) = description {
        p.insert("description".into(), d.into());
    }
    p.insert("format".into(), format.into());
    if let Some(t) = swagger_type(ty) {
        p.insert("type".into(), t.into());
    }
    Value::Object(p)
}

fn fk_note(schema: &Schema, f: &FieldDef) -> Option<String> {
    let target = f.references.as_ref()?;
    let key = schema.collections.get(target)?.primary_key.as_str();
    Some(format!(
        "Note:\nThis is a Foreign Key to `{target}.{key}`.<fk table='{target}' column='{key}'/>"
    ))
}

fn definition(schema: &Schema, def: &CollectionDef) -> Value {
    let mut props = Map::new();
    let key_ty = def.key_type.or(Some(FieldType::Text));
    props.insert(
        def.primary_key.clone(),
        property(
            key_ty,
            def.key_type.map_or("text", pg_type),
            Some("Note:\nThis is a Primary Key.<pk/>".into()),
        ),
    );
    for (field, f) in &def.fields {
        let format = f.field_type.map_or("jsonb", pg_type);
        props.insert(
            field.clone(),
            property(f.field_type, format, fk_note(schema, f)),
        );
    }
    let mut d = Map::new();
    // Integer keys are never generated: the only column an insert must give.
    if def.key_type == Some(FieldType::Integer) {
        d.insert("required".into(), json!([def.primary_key]));
    }
    d.insert("properties".into(), Value::Object(props));
    d.insert("type".into(), "object".into());
    Value::Object(d)
}

fn shared_parameters() -> Map<String, Value> {
    let prefer = |values: &[&str]| json!({"name": "Prefer", "description": "Preference", "required": false, "enum": values, "in": "header", "type": "string"});
    let query = |name: &str, description: &str| json!({"name": name, "description": description, "required": false, "in": "query", "type": "string"});
    let mut p = Map::new();
    p.insert("preferParams".into(), prefer(&["params=single-object"]));
    p.insert(
        "preferReturn".into(),
        prefer(&["return=representation", "return=minimal", "return=none"]),
    );
    p.insert("preferCount".into(), prefer(&["count=none"]));
    p.insert(
        "preferPost".into(),
        prefer(&[
            "return=representation",
            "return=minimal",
            "return=none",
            "resolution=ignore-duplicates",
            "resolution=merge-duplicates",
        ]),
    );
    p.insert("select".into(), query("select", "Filtering Columns"));
    p.insert("on_conflict".into(), query("on_conflict", "On Conflict"));
    p.insert("order".into(), query("order", "Ordering"));
    p.insert("range".into(), json!({"name": "Range", "description": "Limiting and Pagination", "required": false, "in": "header", "type": "string"}));
    p.insert("rangeUnit".into(), json!({"name": "Range-Unit", "description": "Limiting and Pagination", "required": false, "default": "items", "in": "header", "type": "string"}));
    p.insert("offset".into(), query("offset", "Limiting and Pagination"));
    p.insert("limit".into(), query("limit", "Limiting and Pagination"));
    p
}
