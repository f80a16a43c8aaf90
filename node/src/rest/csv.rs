//! Rows as `text/csv`, byte for byte as PostgREST writes them: a header of the column names
//! (in table order, see `Table::column_names`), then one line per row with the values as Postgres prints a row
//! (`record_out`): null is empty, booleans are `t`/`f`, JSON is its text, and a value that is
//! empty or holds a comma, double quote, backslash, parenthesis or whitespace is double-quoted
//! with `"` and `\` doubled. Lines are joined by `\n`, with no final newline; no rows is `\n`.

use serde_json::Value;

/// The CSV text of `rows` (objects), one column per name of `columns`; no rows, no header.
pub fn to_csv(columns: &[String], rows: &[Value]) -> String {
    let header = match rows.is_empty() {
        true => String::new(),
        false => columns.join(","),
    };
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let value = |c: &String| field(r.get(c).unwrap_or(&Value::Null));
            columns.iter().map(value).collect::<Vec<_>>().join(",")
        })
        .collect();
    format!("{header}\n{}", lines.join("\n"))
}

fn field(v: &Value) -> String {
    let text = match v {
        Value::Null => return String::new(),
        Value::Bool(true) => return "t".into(),
        Value::Bool(false) => return "f".into(),
        Value::Number(n) => return n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let needs_quotes = text.is_empty()
        || text
            .chars()
            .any(|c| matches!(c, '"' | '\\' | '(' | ')' | ',') || c.is_ascii_whitespace());
    if !needs_quotes {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn postgres_record_quoting() {
        let rows = [
            json!({"a": 1, "b": "plain", "c": true, "d": null}),
            json!({"a": 2.5, "b": "x, \"y\" (z)\\", "c": false, "d": {"k": [1]}}),
            json!({"a": 3, "b": "", "c": null, "d": "two words"}),
        ];
        let cols: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(
            to_csv(&cols, &rows),
            "a,b,c,d\n1,plain,t,\n2.5,\"x, \"\"y\"\" (z)\\\\\",f,\"{\"\"k\"\":[1]}\"\n3,\"\",,\"two words\""
        );
        assert_eq!(to_csv(&cols, &[]), "\n");
    }
}
