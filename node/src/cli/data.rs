//! Record commands: init, put, get, delete, incr, append, query, summary, status.

use std::io::Read;
use std::path::Path;

use meshlite_core::Schema;
use meshlite_core::store::{DB_FILE, OpenOptions, Query, Store, WriteOp};
use serde_json::Value;

use super::output::{CliError, Context, print_json};

/// Arguments of `meshlite query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Collection name.
    pub collection: String,
    /// Keep records whose FIELD equals VALUE (VALUE is parsed as JSON when it is valid JSON,
    /// else taken as a string: `--where status=running`, `--where retries=3`). Repeatable.
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    pub filters: Vec<String>,
    /// Sort by FIELD; append `:desc` for descending order.
    #[arg(long, value_name = "FIELD[:desc]")]
    pub order: Option<String>,
    /// At most N records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip the first N records.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
}

/// Opens the store in `dir` (creating it if missing) with the stored schema.
pub(crate) fn open(dir: &Path) -> Result<Store, CliError> {
    Store::open(dir, OpenOptions::default())
        .context(|| format!("cannot open store {}", dir.display()))
}

/// Runs `f` on the opened store, then closes it cleanly (flushing the writer).
fn with_store<T>(dir: &Path, f: impl FnOnce(&Store) -> Result<T, CliError>) -> Result<T, CliError> {
    with_opened(open(dir)?, f)
}

/// As [`with_store`] for reads: a directory that holds no store is an error, not a new store
/// (a mistyped `--data` must not answer "nothing").
fn with_existing_store<T>(
    dir: &Path,
    f: impl FnOnce(&Store) -> Result<T, CliError>,
) -> Result<T, CliError> {
    require_store(dir)?;
    with_store(dir, f)
}

/// A directory that holds no store is an error for reads.
fn require_store(dir: &Path) -> Result<(), CliError> {
    if dir.join(DB_FILE).is_file() {
        return Ok(());
    }
    Err(CliError::msg(format!(
        "no store in {}: check --data (or MESHLITE_DATA); `meshlite init` creates one",
        dir.display()
    )))
}

fn with_opened<T>(
    store: Store,
    f: impl FnOnce(&Store) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let out = f(&store);
    store
        .close()
        .context(|| "cannot close the store cleanly".into())?;
    out
}

pub(crate) fn init(dir: &Path, schema: Option<&Path>) -> Result<(), CliError> {
    // The daemon declares the registry's collection too, so both install the same schema.
    let schema = schema
        .map(Schema::from_file)
        .transpose()?
        .map(crate::registry::declare);
    let opts = OpenOptions {
        schema,
        ..OpenOptions::default()
    };
    let store =
        Store::open(dir, opts).context(|| format!("cannot initialize {}", dir.display()))?;
    let status = store.status()?;
    store.close()?;
    print_json(&status)
}

/// Reads a JSON object argument (`-` = stdin).
fn parse_object(arg: &str) -> Result<Value, CliError> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context(|| "cannot read stdin".into())?;
        s
    } else {
        arg.to_owned()
    };
    let value: Value = serde_json::from_str(&text).context(|| "invalid JSON".into())?;
    if !value.is_object() {
        return Err(CliError::msg(format!(
            "expected a JSON object like {{\"id\": \"a\"}}, got {value}"
        )));
    }
    Ok(value)
}

pub(crate) fn put(
    dir: &Path,
    collection: &str,
    json: &str,
    recreate: bool,
) -> Result<(), CliError> {
    let value = parse_object(json)?;
    let op = WriteOp::Put {
        collection: collection.to_owned(),
        value,
        recreate,
    };
    let committed = with_store(dir, |s| Ok(s.transact(vec![op])?))?;
    let merged = committed.changes.into_iter().next().and_then(|c| c.value);
    print_json(&merged)
}

pub(crate) fn get(dir: &Path, collection: &str, id: &str) -> Result<(), CliError> {
    match with_existing_store(dir, |s| Ok(s.get(collection, id)?))? {
        Some(record) => print_json(&record),
        None => Err(CliError::msg(format!(
            "{collection}/{id}: not found (never written, or deleted)"
        ))),
    }
}

pub(crate) fn delete(dir: &Path, collection: &str, id: &str) -> Result<(), CliError> {
    with_store(dir, |s| Ok(s.delete(collection, id)?))?;
    print_json(&serde_json::json!({ "collection": collection, "id": id, "deleted": true }))
}

pub(crate) fn incr(
    dir: &Path,
    collection: &str,
    id: &str,
    field: &str,
    n: i64,
) -> Result<(), CliError> {
    let merged = with_store(dir, |s| Ok(s.increment(collection, id, field, n)?))?;
    print_json(&merged)
}

pub(crate) fn append(dir: &Path, collection: &str, json: &str) -> Result<(), CliError> {
    let value = parse_object(json)?;
    let row = with_store(dir, |s| Ok(s.append(collection, value)?))?;
    print_json(&row)
}

/// Parses `FIELD=VALUE` (VALUE as JSON when valid, else a string).
fn parse_filter(arg: &str) -> Result<(String, Value), CliError> {
    let Some((field, raw)) = arg.split_once('=') else {
        return Err(CliError::msg(format!(
            "--where {arg:?}: expected FIELD=VALUE"
        )));
    };
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    Ok((field.to_owned(), value))
}

fn parse_order(arg: &str) -> (String, bool) {
    match arg.rsplit_once(':') {
        Some((field, dir)) if dir.eq_ignore_ascii_case("desc") => (field.to_owned(), true),
        Some((field, dir)) if dir.eq_ignore_ascii_case("asc") => (field.to_owned(), false),
        _ => (arg.to_owned(), false),
    }
}

pub(crate) fn query(dir: &Path, args: &QueryArgs) -> Result<(), CliError> {
    let q = Query {
        filters: args
            .filters
            .iter()
            .map(|f| parse_filter(f))
            .collect::<Result<_, _>>()?,
        order: args.order.as_deref().map(parse_order),
        limit: args.limit,
        offset: args.offset,
        include_deleted: false,
        insertion_order: false,
    };
    let rows = with_existing_store(dir, |s| Ok(s.query(&args.collection, &q)?))?;
    rows.iter().try_for_each(print_json)
}

/// Prints the summary; asks the daemon when one holds the directory.
pub(crate) fn summary(dir: &Path) -> Result<(), CliError> {
    require_store(dir)?;
    match super::remote::open_target(dir)? {
        super::remote::Target::Daemon(addr) => print_json(&super::remote::summary(addr)?),
        super::remote::Target::Local(store) => {
            let summary = with_opened(store, |s| Ok(s.summary()?))?;
            print_json(&summary)
        }
    }
}

pub(crate) fn status(dir: &Path) -> Result<(), CliError> {
    let status = with_existing_store(dir, |s| Ok(s.status()?))?;
    print_json(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_json_or_string() {
        assert_eq!(parse_filter("n=3").unwrap(), ("n".into(), Value::from(3)));
        assert_eq!(
            parse_filter("s=running").unwrap(),
            ("s".into(), Value::from("running"))
        );
        assert_eq!(
            parse_filter("id=\"7\"").unwrap(),
            ("id".into(), Value::from("7"))
        );
        assert!(parse_filter("nofield").is_err());
        assert_eq!(parse_order("at:desc"), ("at".into(), true));
        assert_eq!(parse_order("at"), ("at".into(), false));
    }
}
