#![allow(clippy::unwrap_used)]

use super::*;
use crate::rest::lex::{MAX_FILTERS, MAX_LIST, MAX_NAME};
use crate::rest::logic::{CmpOp, IsValue, Op};
use crate::rest::select::Embed;

fn leaf(q: &UrlQuery, i: usize) -> &Filter {
    match &q.filters[i] {
        Cond::Filter(f) => f,
        Cond::Group(g) => panic!("a group: {g:?}"),
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn code(r: Result<UrlQuery, RestError>) -> &'static str {
    r.unwrap_err().code
}

#[test]
fn select_filters_order_and_paging_parse() {
    let q = parse(&pairs(&[
        ("select", "id, label:name,*"),
        ("qty", "gte.3"),
        ("name", "not.ilike.*ab%"),
        ("id", "in.(1,\"2,3\",\"a\\\"b\")"),
        ("done", "is.null"),
        ("order", "qty.desc,name.asc.nullsfirst,id"),
        ("limit", "10"),
        ("offset", "5"),
    ]))
    .unwrap();
    assert_eq!(q.select.len(), 3);
    assert_eq!(
        q.select[1],
        SelectItem::Column {
            col: ColumnRef::plain("name"),
            alias: Some("label".into())
        }
    );
    assert_eq!(q.select[2], SelectItem::Star);
    assert_eq!(leaf(&q, 0).op, Op::Cmp(CmpOp::Gte, "3".into()));
    assert!(leaf(&q, 1).negate);
    assert_eq!(
        leaf(&q, 1).op,
        Op::Like {
            pattern: "%ab%".into(),
            case_insensitive: true
        }
    );
    assert_eq!(
        leaf(&q, 2).op,
        Op::In(vec!["1".into(), "2,3".into(), "a\"b".into()])
    );
    assert_eq!(leaf(&q, 3).op, Op::Is(IsValue::Null));
    let o = &q.order;
    assert!(o[0].desc && o[0].nulls_first);
    assert!(!o[1].desc && o[1].nulls_first);
    assert!(!o[2].desc && !o[2].nulls_first);
    assert_eq!((q.limit, q.offset), (Some(10), 5));
}

#[test]
fn raw_query_strings_are_decoded() {
    let q = parse_raw(Some("select=*&name=eq.a%20b&name=neq.c+d&order=id.desc")).unwrap();
    assert_eq!(q.filters.len(), 2, "repeated keys are kept");
    assert_eq!(leaf(&q, 0).op, Op::Cmp(CmpOp::Eq, "a b".into()));
    assert_eq!(leaf(&q, 1).op, Op::Cmp(CmpOp::Neq, "c d".into()));
    assert_eq!(parse_raw(None).unwrap(), UrlQuery::default());
    let q = parse_raw(Some("columns=%22id%22,%22title%22")).unwrap();
    assert_eq!(q.columns, Some(vec!["id".to_owned(), "title".to_owned()]));
}

#[test]
fn hostile_input_is_pgrst100_never_a_panic() {
    let huge = "9".repeat(100_000);
    let long_name = "a".repeat(MAX_NAME + 1);
    let many: String = (0..MAX_LIST + 1).map(|i| format!("{i},")).collect();
    let cases: Vec<Vec<(String, String)>> = vec![
        pairs(&[("limit", &huge)]),
        pairs(&[("limit", "-1")]),
        pairs(&[("offset", "1e3")]),
        pairs(&[("x", "nope.1")]),
        pairs(&[("x", "eq")]),
        pairs(&[("x", "not.")]),
        pairs(&[("x", "in.1,2")]),
        pairs(&[("x", "in.(\"open")]),
        pairs(&[("x", "in.(\"a\"b)")]),
        pairs(&[("x", "is.maybe")]),
        pairs(&[("x", "fts.word")]),
        pairs(&[("x", "sl.(1,2)")]),
        pairs(&[("or", "a.eq.1,b.eq.2")]),
        pairs(&[("or", "(a.eq.1,b.eq.2")]),
        pairs(&[("and", "(a.eq.1,or(b.eq.2)")]),
        pairs(&[("x->", "eq.1")]),
        pairs(&[("x->>a->b", "eq.1")]),
        pairs(&[("rel.or", "(a.eq.1)")]),
        pairs(&[("select", "*,m(*,n(*))")]),
        pairs(&[("select", "*,m(*")]),
        pairs(&[("select", "*,...m(*)")]),
        pairs(&[(&long_name, "eq.1")]),
        pairs(&[("bad name", "eq.1")]),
        pairs(&[("x;drop", "eq.1")]),
        pairs(&[("", "eq.1")]),
        pairs(&[("select", "a->")]),
        pairs(&[("select", "a::text")]),
        pairs(&[("select", "a:")]),
        pairs(&[("order", "a.sideways")]),
        pairs(&[("order", "")]),
        pairs(&[("x", &format!("in.({many})"))]),
        pairs(&[("columns", "a,,b")]),
    ];
    for c in cases {
        assert_eq!(code(parse(&c)), "PGRST100", "{c:?}");
    }
    let too_many: Vec<(String, String)> = (0..=MAX_FILTERS)
        .map(|i| (format!("c{i}"), "eq.1".to_owned()))
        .collect();
    assert_eq!(code(parse(&too_many)), "PGRST100");
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut runner = proptest::test_runner::TestRunner::default();
    let s = "\\PC{0,80}";
    runner
        .run(&(s, s), |(k, v)| {
            let _ = parse(&[(k.clone(), v.clone())]);
            let _ = parse_raw(Some(&format!("{k}={v}")));
            let _ = parse_range(&v);
            Ok(())
        })
        .unwrap();
}

#[test]
fn range_headers() {
    assert_eq!(parse_range("0-9").unwrap(), (0, Some(10)));
    assert_eq!(parse_range("5-").unwrap(), (5, None));
    for bad in ["9-0", "a-b", "", "-5", "99999999999999999999999-1"] {
        assert_eq!(parse_range(bad).unwrap_err().code, "PGRST103", "{bad}");
    }
}

#[test]
fn paths_embeds_and_trees_parse() {
    let q = parse(&pairs(&[
        (
            "select",
            "id,v:data->a->>b,data->c,*,author:users!author_id!inner(name),messages(*)",
        ),
        ("data->>k", "eq.x"),
        ("or", "(id.eq.1,and(id.gt.5,data->n.lt.9))"),
        ("messages.body", "like.*hi*"),
        ("order", "data->>k.desc,id"),
    ]))
    .unwrap();
    let SelectItem::Column { col, alias } = &q.select[1] else {
        panic!()
    };
    assert_eq!(
        (col.path.len(), col.as_text, alias.as_deref()),
        (2, true, Some("v"))
    );
    let SelectItem::Column { col, alias: None } = &q.select[2] else {
        panic!()
    };
    assert_eq!(col.output_name(), "c");
    let SelectItem::Embed(e) = &q.select[4] else {
        panic!()
    };
    assert_eq!(
        e,
        &Embed {
            name: "users".into(),
            alias: Some("author".into()),
            hint: Some("author_id".into()),
            inner: true,
            items: vec![SelectItem::column("name")],
        }
    );
    assert_eq!(leaf(&q, 0).column.path, vec!["k".to_owned()]);
    let Cond::Group(g) = &q.filters[1] else {
        panic!()
    };
    assert!(g.any && g.conds.len() == 2);
    assert_eq!(q.embed_filters[0].0, "messages");
    assert_eq!(q.order[0].column.path, vec!["k".to_owned()]);
    assert!(q.order[0].desc);
}
