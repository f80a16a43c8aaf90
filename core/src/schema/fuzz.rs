//! Body of the fuzz target `schema_parse` (`fuzz/`): schema TOML from arbitrary bytes. Behind
//! the `testkit` feature; `schema::tests` runs it on mutated seeds in `cargo test`.
//!
//! What must hold, whatever the text: parsing never panics; a schema that parses serializes
//! (stores keep their schema as TOML, and `to_toml` says it cannot fail), reads back equal, and
//! is a valid upgrade of itself; every declared default is accepted by its field's type.

use super::Schema;

/// The body; panics on a broken property.
pub fn schema_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(schema) = Schema::from_toml(text) else {
        return;
    };
    let again = Schema::from_toml(&schema.to_toml()).expect("a schema reads back from its TOML");
    assert_eq!(again, schema, "the TOML round trip changed the schema");
    schema
        .check_upgrade(&schema)
        .expect("a schema is a valid upgrade of itself");
    for (name, def) in &schema.collections {
        for (field, value) in def.defaults() {
            assert!(
                def.check_value(name, field, value).is_ok(),
                "default of {name}.{field} refused by its own type: {value}"
            );
        }
    }
}
