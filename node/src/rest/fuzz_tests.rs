//! The `rest_query` fuzz body on seed queries of every construct and on random mutations of them.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fuzz::rest_query;

const SEEDS: &[&str] = &[
    "select=*",
    "select=id,n,s&order=n.desc.nullsfirst,s.asc&limit=3&offset=1",
    "n=gt.5&s=like.*pp*&ok=is.true",
    "or=(n.gt.1,and(s.ilike.*A*,ok.is.false),not.and(f.lt.2,n.eq.10))",
    "j->a->>0=eq.1&select=id,x:j->b->>c",
    "j=cs.{\"a\":[1]}&u=eq.018f0000-0000-7000-8000-000000000001",
    "at=gte.2024-05-01T11:00:00Z&order=at.desc,id",
    "id=in.(1,2,3)&s=not.in.(apple,\"a,b\")&f=neq.1.5",
    "x=is.null&order=x.asc.nullslast,j->a.desc",
    "n=not.is.null&s=match.^a&s=imatch.PIE$\nitems 0-4",
    "order=j.desc,f.asc,s.desc,n,at,u,ok,x\n0-",
    "j->>a=ov.{1,2}&s=fts.x",
];

fn mutate(rng: &mut StdRng, seed: &str) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    let alphabet = b"().,=&*:->\"{}[]\\%_!^$ 0123456789anotdescisnullqgtlikeorin\n\x00\xff";
    for _ in 0..rng.random_range(1..6) {
        let at = rng.random_range(0..=bytes.len());
        let b = alphabet[rng.random_range(0..alphabet.len())];
        match rng.random_range(0..3) {
            0 => bytes.insert(at, b),
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ if at < bytes.len() => bytes[at] = b,
            _ => bytes.push(b),
        }
    }
    bytes
}

#[test]
fn seeds_evaluate_and_hold_the_properties() {
    for seed in SEEDS {
        rest_query(seed.as_bytes());
    }
}

#[test]
fn mutated_queries_never_break_the_properties() {
    let mut rng = StdRng::seed_from_u64(0x5E57);
    for _ in 0..3000 {
        let seed = SEEDS[rng.random_range(0..SEEDS.len())];
        rest_query(&mutate(&mut rng, seed));
    }
}

/// Keys and values with multibyte characters where the parser trims or splits: the byte-wise
/// mutations above never build them (a lone byte of a multibyte character is invalid UTF-8).
#[test]
fn unicode_around_names_never_breaks_the_properties() {
    for ws in ["\u{85}", "\u{a0}", "\u{2003}", "é", "日本"] {
        for q in [
            format!("{ws}rel.n=eq.1"),
            format!("{ws}{ws}ZA.nan=eq.1"),
            format!("rel{ws}.n=eq.1"),
            format!("n{ws}=eq.{ws}"),
            format!("select={ws}a:{ws}n,{ws}s"),
            format!("order={ws}n.desc{ws}"),
            format!("or=({ws}n.eq.1,s.eq.{ws})"),
        ] {
            rest_query(q.as_bytes());
        }
    }
}

/// Every input a campaign found crashing (`fuzz/regressions/rest_query/`, committed) now holds.
#[test]
fn committed_crashes_hold() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/regressions/rest_query"
    );
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("the regression inputs are committed") {
        let path = entry.expect("a directory entry").path();
        rest_query(&std::fs::read(&path).expect("a regression input"));
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {dir}");
}
