//! The `Prefer` request header (PostgREST's `preferences.rst`). Unknown or malformed
//! preferences are ignored, as PostgREST does under its default `handling=lenient`.

use axum::http::HeaderMap;

/// What a write answers with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Return {
    /// No body (PostgREST's default).
    #[default]
    Minimal,
    /// No body; an insert of exactly one row adds a `Location` header naming it.
    HeadersOnly,
    /// The written rows, shaped by `select=`.
    Representation,
}

/// What an insert does with a primary key that already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resolution {
    /// A plain insert: an existing live key is 23505.
    #[default]
    Error,
    /// Upsert: the given columns are merged into the existing row.
    MergeDuplicates,
    /// Upsert that keeps the existing row untouched.
    IgnoreDuplicates,
}

/// The preferences of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefer {
    /// `return=`.
    pub ret: Return,
    /// `count=exact|planned|estimated` (all three are counted exactly).
    pub count: bool,
    /// `resolution=`.
    pub resolution: Resolution,
    /// `missing=default`: with `columns=`, a listed column an object lacks takes its declared
    /// default (else null, as with `missing=null`).
    pub missing_default: bool,
}

impl Prefer {
    /// Reads every `Prefer` header (each a comma-separated list).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut p = Prefer::default();
        let values = headers.get_all("prefer").into_iter();
        let tokens = values
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim);
        for token in tokens {
            match token {
                "return=representation" => p.ret = Return::Representation,
                "return=minimal" => p.ret = Return::Minimal,
                "return=headers-only" => p.ret = Return::HeadersOnly,
                "count=exact" | "count=planned" | "count=estimated" => p.count = true,
                "resolution=merge-duplicates" => p.resolution = Resolution::MergeDuplicates,
                "resolution=ignore-duplicates" => p.resolution = Resolution::IgnoreDuplicates,
                "missing=default" => p.missing_default = true,
                "missing=null" => p.missing_default = false,
                _ => {}
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_headers_and_lists_combine() {
        let mut h = HeaderMap::new();
        h.append(
            "prefer",
            "return=representation, count=planned".parse().unwrap(),
        );
        h.append(
            "prefer",
            "resolution=merge-duplicates,bogus,missing=default"
                .parse()
                .unwrap(),
        );
        let p = Prefer::from_headers(&h);
        assert_eq!(p.ret, Return::Representation);
        assert!(p.missing_default);
        assert!(p.count);
        assert_eq!(p.resolution, Resolution::MergeDuplicates);
        assert_eq!(Prefer::from_headers(&HeaderMap::new()), Prefer::default());
    }
}
